"""Every sample document beside the schemas is valid or invalid as its folder says."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.events.schemas import SchemaLoadError, load_schemas

SAMPLES = Path(__file__).resolve().parents[3] / "schemas" / "v1" / "samples"
SCHEMAS = load_schemas()


def _samples(validity: str):
    paths = sorted(SAMPLES.glob(f"*/{validity}/*.json"))
    return [pytest.param(p, id=f"{p.parent.parent.name}/{p.stem}") for p in paths]


def test_every_schema_has_valid_and_invalid_samples():
    names = {"envelope", "events.click", "events.view", "events.social", "events.identify",
             "events.dlq"}
    for name in names:
        assert list((SAMPLES / name / "valid").glob("*.json")), f"{name} has no valid sample"
        assert list((SAMPLES / name / "invalid").glob("*.json")), f"{name} has no invalid sample"


@pytest.mark.parametrize("path", _samples("valid"))
def test_valid_sample(path: Path):
    validator = SCHEMAS.by_name(path.parent.parent.name)
    doc = orjson.loads(path.read_bytes())
    errors = [e.message for e in validator.iter_errors(doc)]
    assert errors == []


@pytest.mark.parametrize("path", _samples("invalid"))
def test_invalid_sample(path: Path):
    validator = SCHEMAS.by_name(path.parent.parent.name)
    assert not validator.is_valid(orjson.loads(path.read_bytes()))


def test_missing_schema_file_is_named(tmp_path: Path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "envelope.json").write_text('{"$id": "https://x.invalid/e.json"}')
    with pytest.raises(SchemaLoadError, match="events.click.json"):
        load_schemas(tmp_path)


def test_schema_dir_from_environment_else_beside_package_else_cwd(tmp_path, monkeypatch):
    from streams.events import schemas

    (tmp_path / "mine" / "v1").mkdir(parents=True)
    monkeypatch.setenv("STREAMS_SCHEMA_DIR", str(tmp_path / "mine"))
    assert schemas.schema_dir() == tmp_path / "mine"
    monkeypatch.delenv("STREAMS_SCHEMA_DIR")
    assert schemas.schema_dir() == schemas.DEFAULT_DIR
    monkeypatch.setattr(schemas, "DEFAULT_DIR", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SchemaLoadError, match="STREAMS_SCHEMA_DIR"):
        schemas.schema_dir()
    (tmp_path / "schemas" / "v1").mkdir(parents=True)
    assert schemas.schema_dir() == tmp_path / "schemas"
