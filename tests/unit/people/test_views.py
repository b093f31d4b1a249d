"""The person page's placeholder token parsing (until the shared access helper lands)."""

from __future__ import annotations

import pytest

from streams.people.views import parse_tokens


def test_parse_tokens_scopes_per_token():
    assert parse_tokens(" r1=read, f1=forget ,both=read,both=forget,") == {
        "r1": frozenset({"read"}), "f1": frozenset({"forget"}),
        "both": frozenset({"read", "forget"})}
    assert parse_tokens(None) == {} and parse_tokens("") == {}


@pytest.mark.parametrize("raw", ["justatoken", "t=write", "=read", "t="])
def test_parse_tokens_refuses_malformed_pairs(raw):
    with pytest.raises(ValueError, match="token=read\\|forget") as err:
        parse_tokens(raw)
    assert "justatoken" not in str(err.value)  # a token is never echoed
