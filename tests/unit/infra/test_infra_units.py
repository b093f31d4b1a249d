import socket

import pytest

from streams.infra import kafka as kafka_mod
from streams.infra.kafka import LocalKafka, java_bin
from streams.infra.procs import InfraError, ensure_port_free
from streams.settings import load_settings


def test_server_properties_follow_settings(tmp_path):
    s = load_settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:19500",
                      kafka_controller_port=19501, topic_partitions=3)
    k = LocalKafka(s)
    k.write_config()
    props = dict(
        line.split("=", 1) for line in k.config_file.read_text().splitlines() if "=" in line
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19500,CONTROLLER://127.0.0.1:19501"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19501"
    assert props["log.dirs"] == str(tmp_path.resolve() / "kafka" / "data")
    assert props["num.partitions"] == "3"
    assert props["auto.create.topics.enable"] == "false"


def test_cluster_id_has_kafka_uuid_shape():
    cid = kafka_mod._kafka_uuid()
    assert len(cid) == 22 and "=" not in cid


def test_cluster_id_never_starts_with_a_dash(monkeypatch):
    # A leading '-' made StorageTool read the id as an option (seen once in the suite).
    draws = iter([b"\xfb" + b"\x00" * 15, b"\x01" * 16])
    monkeypatch.setattr(kafka_mod.uuid, "uuid4", lambda: type("U", (), {"bytes": next(draws)}))
    cid = kafka_mod._kafka_uuid()
    assert not cid.startswith("-") and cid == "AQEBAQEBAQEBAQEBAQEBAQ"


def test_port_in_use_is_one_clear_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(InfraError) as info:
            ensure_port_free(port, "kafka", "STREAMS_KAFKA_BOOTSTRAP")
    msg = str(info.value)
    assert f"port {port} is already in use" in msg and "STREAMS_KAFKA_BOOTSTRAP" in msg
    assert "\n" not in msg


def test_missing_java_says_what_to_install(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InfraError, match="no Java found; install Java 17"):
        java_bin()


def test_missing_maven_says_what_to_install(monkeypatch, tmp_path):
    s = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    def which(name):
        return "/usr/bin/java" if name == "java" else None

    monkeypatch.setattr(kafka_mod.shutil, "which", which)
    with pytest.raises(InfraError, match=r"Maven \(mvn\) is not on PATH"):
        LocalKafka(s).resolve()


def test_a_broker_busy_starting_is_waited_for_while_its_log_grows(monkeypatch, tmp_path):
    s = load_settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1")
    k = LocalKafka(s)
    log = k.root / "logs" / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    polls = {"n": 0}

    def answers(_bootstrap):
        polls["n"] += 1
        with log.open("a") as f:  # the broker writes as it loads its partitions
            f.write("Loaded log for partition t-0\n")
        return polls["n"] >= 8

    monkeypatch.setattr(kafka_mod, "port_open", lambda host, port: True)
    monkeypatch.setattr(kafka_mod, "metadata_ok", answers)
    monkeypatch.setattr(kafka_mod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(kafka_mod, "READY_TIMEOUT", 0.05)
    clock = iter(i * 0.02 for i in range(10_000))  # each poll "takes" 20 ms
    monkeypatch.setattr(kafka_mod.time, "monotonic", lambda: next(clock))
    k.wait_ready()  # 8 polls, longer than READY_TIMEOUT, but the log kept growing
    assert polls["n"] == 8


def test_a_broker_whose_log_is_quiet_times_out_with_one_clear_line(monkeypatch, tmp_path):
    s = load_settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1")
    k = LocalKafka(s)
    monkeypatch.setattr(kafka_mod, "port_open", lambda host, port: True)
    monkeypatch.setattr(kafka_mod, "metadata_ok", lambda _b: False)
    monkeypatch.setattr(kafka_mod.time, "sleep", lambda _s: None)
    monkeypatch.setattr(kafka_mod, "READY_TIMEOUT", 0.05)
    clock = iter(i * 0.02 for i in range(10_000))
    monkeypatch.setattr(kafka_mod.time, "monotonic", lambda: next(clock))
    with pytest.raises(InfraError, match=r"no metadata answer .* log quiet for"):
        k.wait_ready()
