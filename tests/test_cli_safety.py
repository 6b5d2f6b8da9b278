"""No command destroys data or reports nonsense: path collisions, atomic outputs, hostile rules
files, labels and reports, standard input, compressed input, closed pipes.

Commands run through the console script's entry point (a subprocess), as users run them."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.unit

GOOD = (
    b'{"transaction_id":"ok-%d","customer_id":"C1","store_id":"S01","amount":10.5,'
    b'"timestamp":"2026-01-05T10:%02d:00-03:00","schema_version":2}'
)


def cli(*args: str | Path, stdin: bytes | None = None, cwd: Path | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        check=False,
        cwd=cwd,
    )
    said = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert "Traceback" not in said, said
    return done.returncode, said


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "tx.jsonl"
    path.write_bytes(b"\n".join(GOOD % (i, i) for i in range(30)) + b"\n")
    return path


# ---- path collisions -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        ["--output", "{in}"],
        ["--output", "{out}", "--dlq", "{in}"],
        ["--output", "{out}", "--summary", "{in}"],
        ["--output", "{out}", "--dlq", "{out}"],
        ["--output", "{out}", "--summary", "{labels}", "--labels", "{labels}"],
        ["--output", "{link}"],  # another name (a symbolic link) of the input
    ],
)
def test_replay_refuses_to_write_over_its_inputs(
    events: Path, tmp_path: Path, extra: list[str]
) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b'{"transaction_id":"ok-1","is_fraud":false}\n')
    (tmp_path / "link.jsonl").symlink_to(events)
    before = events.read_bytes(), labels.read_bytes()
    names = {"in": events, "out": tmp_path / "out.jsonl", "labels": labels}
    names["link"] = tmp_path / "link.jsonl"
    args = [a.format(**{k: str(v) for k, v in names.items()}) for a in extra]
    code, said = cli("replay", "--input", events, *args)
    assert code == 2 and "same file" in said
    assert (events.read_bytes(), labels.read_bytes()) == before


def test_generate_refuses_one_path_for_events_and_labels(tmp_path: Path) -> None:
    same = tmp_path / "x.jsonl"
    same.write_bytes(b"keep me\n")
    code, said = cli("generate", "--events", "10", "--output", same, "--labels", same)
    assert code == 2 and "same file" in said and same.read_bytes() == b"keep me\n"


def test_train_refuses_to_write_over_its_input(events: Path) -> None:
    code, said = cli("train", "--input", events, "--output", events)
    assert code == 2 and "same file" in said


# ---- atomic outputs ------------------------------------------------------------------------------
def test_a_failing_run_leaves_the_previous_outputs_intact(tmp_path: Path) -> None:
    """A gzip file cut short fails mid-run: the old outputs stay, no temporary file is left."""
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    out.write_bytes(b"previous decisions\n")
    dead.write_bytes(b"previous dead letters\n")
    whole = gzip.compress(b"\n".join(GOOD % (i, i % 60) for i in range(50_000)))
    broken = tmp_path / "cut.jsonl.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    code, said = cli("replay", "--input", broken, "--output", out, "--dlq", dead)
    assert code == 2 and "error" in said
    assert out.read_bytes() == b"previous decisions\n"
    assert dead.read_bytes() == b"previous dead letters\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jsonl.gz", "dead.jsonl", "out.jsonl"]


def test_a_killed_run_leaves_nothing_half_written_under_the_final_name(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"\n".join(GOOD % (i, i % 60) for i in range(400_000)) + b"\n")
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous decisions\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow_jobs.cli", "replay", "-i", str(big), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the temporary output holds decisions
        temps = list(tmp_path.glob(".out.jsonl.*.tmp"))
        if temps and temps[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("replay never started writing")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert out.read_bytes() == b"previous decisions\n"


def test_an_unwritable_dead_letter_path_truncates_nothing(events: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous decisions\n")
    code, said = cli(
        "replay", "-i", events, "-o", out, "--dlq", tmp_path / "missing-dir" / "dead.jsonl"
    )
    assert code == 2 and "No such file or directory" in said and "missing-dir" in said
    assert out.read_bytes() == b"previous decisions\n"


def test_outputs_keep_the_permissions_of_the_file_they_replace(
    events: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"")
    out.chmod(0o640)
    assert cli("replay", "-i", events, "-o", out)[0] == 0
    assert out.stat().st_mode & 0o777 == 0o640 and out.read_bytes().count(b"\n") == 30


# ---- inputs --------------------------------------------------------------------------------------
def test_standard_input_and_output(events: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", "replay", "-i", "-", "-o", "-"],
        input=events.read_bytes(),
        capture_output=True,
        check=True,
        cwd=tmp_path,
    )
    decisions = [orjson.loads(x) for x in done.stdout.splitlines()]
    assert [d["transaction_id"] for d in decisions] == [f"ok-{i}" for i in range(30)]
    assert b"replayed 30 lines" in done.stderr


def test_gzip_input_is_read_and_other_compression_is_refused(events: Path, tmp_path: Path) -> None:
    packed = tmp_path / "tx.jsonl.gz"
    packed.write_bytes(gzip.compress(events.read_bytes()))
    out = tmp_path / "out.jsonl"
    code, said = cli("replay", "-i", packed, "-o", out)
    assert code == 0 and out.read_bytes().count(b"\n") == 30, said
    code, said = cli("replay", "-i", "-", "-o", out, stdin=gzip.compress(events.read_bytes()))
    assert code == 0 and out.read_bytes().count(b"\n") == 30, said
    xz = tmp_path / "tx.jsonl.xz"
    xz.write_bytes(b"\xfd7zXZ\x00\x00garbage")
    code, said = cli("replay", "-i", xz, "-o", out)
    assert code == 2 and "compressed input (xz)" in said and "xzcat" in said


def test_a_byte_order_mark_is_not_an_error(events: Path, tmp_path: Path) -> None:
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + events.read_bytes())
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    assert cli("replay", "-i", bom, "-o", out, "--dlq", dead)[0] == 0
    assert out.read_bytes().count(b"\n") == 30 and dead.read_bytes() == b""


def test_piping_into_head_is_not_an_error(events: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        f"{sys.executable} -m streamflow_jobs.cli replay -i {events} -o - | head -1",
        shell=True,
        capture_output=True,
        check=False,
        cwd=tmp_path,
        executable="/bin/bash",
    )
    assert done.stdout.count(b"\n") == 1 and b"Traceback" not in done.stderr
    done = subprocess.run(
        f"set -o pipefail; {sys.executable} -m streamflow_jobs.cli replay -i {events} "
        f"-o {tmp_path / 'o.jsonl'} | head -c 10",
        shell=True,
        capture_output=True,
        check=False,
        executable="/bin/bash",
    )
    assert done.returncode == 0 and b"Traceback" not in done.stderr


# ---- rules files ---------------------------------------------------------------------------------
BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "velocity: {max_count: *i}\n"
)


def test_a_billion_laughs_rules_file_fails_fast(events: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(BILLION_LAUGHS)
    started = time.monotonic()
    code, said = cli("replay", "-i", events, "-o", tmp_path / "o.jsonl", "--rules", rules)
    assert code == 2 and "aliases" in said and time.monotonic() - started < 20


def test_an_oversized_rules_file_is_refused(events: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    with rules.open("w") as f:
        f.write("version: '1'\n# " + "x" * (17 << 20) + "\n")
    code, said = cli("replay", "-i", events, "-o", tmp_path / "o.jsonl", "--rules", rules)
    assert code == 2 and "MiB" in said


def test_validation_errors_are_one_readable_line_per_field(events: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("velocity:\n  max_count: -3\nalert_threshold: 7\nbogus: 1\n")
    code, said = cli("replay", "-i", events, "-o", tmp_path / "o.jsonl", "--rules", rules)
    assert code == 2
    assert "velocity.max_count: Input should be greater than or equal to 1 (got -3)" in said
    assert "alert_threshold: Input should be less than or equal to 1 (got 7)" in said
    assert "bogus: Extra inputs are not permitted" in said
    assert "https://" not in said and said.count("\n") == 1  # one line, never wrapped


# ---- labels --------------------------------------------------------------------------------------
def _labels(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def test_the_fraud_flag_wins_over_the_pattern_name(events: Path, tmp_path: Path) -> None:
    labels = _labels(
        tmp_path,
        *({"transaction_id": f"ok-{i}", "is_fraud": i < 3, "pattern": "legit"} for i in range(30)),
    )
    summary = tmp_path / "s.json"
    code, said = cli(
        "replay", "-i", events, "-o", tmp_path / "o.jsonl", "--labels", labels, "--summary", summary
    )
    assert code == 0, said
    metrics = orjson.loads(summary.read_bytes())["metrics"]
    assert metrics["fraud"] == 3 and metrics["labelled"] == 30 and metrics["coverage"] == 1.0


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"transaction_id": "ok-1", "is_fraud": "false"}, "is_fraud must be true/false or 1/0"),
        ({"transaction_id": "ok-1", "is_fraud": 2}, "is_fraud must be true/false or 1/0"),
        ({"transaction_id": "ok-1"}, "is_fraud must be true/false or 1/0"),
        ({"transaction_id": 7, "is_fraud": True}, "transaction_id must be a non-empty string"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_wrongly_typed_label_is_an_error_with_its_line(
    events: Path, tmp_path: Path, row: object, expected: str
) -> None:
    labels = _labels(tmp_path, {"transaction_id": "ok-0", "is_fraud": 0}, row)
    code, said = cli("replay", "-i", events, "-o", tmp_path / "o.jsonl", "--labels", labels)
    assert code == 2 and f"{labels}:2: {expected}" in said


def test_conflicting_labels_are_an_error(events: Path, tmp_path: Path) -> None:
    labels = _labels(
        tmp_path,
        {"transaction_id": "ok-1", "is_fraud": True},
        {"transaction_id": "ok-2", "is_fraud": 1},
        {"transaction_id": "ok-1", "is_fraud": False},
    )
    code, said = cli("replay", "-i", events, "-o", tmp_path / "o.jsonl", "--labels", labels)
    assert code == 2 and "ok-1 is labelled legitimate here and fraud on line 1" in said


def test_labels_that_cover_little_of_the_input_are_warned_about(
    events: Path, tmp_path: Path
) -> None:
    half = _labels(tmp_path, *({"transaction_id": f"ok-{i}", "is_fraud": 0} for i in range(15)))
    code, said = cli("replay", "-i", events, "-o", tmp_path / "o.jsonl", "--labels", half)
    assert code == 0 and "labels cover only 50.0% of the 30 transactions" in said
    none = _labels(tmp_path, {"transaction_id": "other", "is_fraud": 1})
    code, said = cli("replay", "-i", events, "-o", tmp_path / "o.jsonl", "--labels", none)
    assert code == 0 and "match none of the 30 transactions" in said


# ---- report --------------------------------------------------------------------------------------
@pytest.fixture
def decided(small_world: tuple[Path, Path, list[str]], tmp_path: Path) -> tuple[Path, Path]:
    events, labels, _ = small_world
    out = tmp_path / "d.jsonl"
    assert cli("replay", "-i", events, "-o", out)[0] == 0
    return out, labels


def test_report_names_bad_lines_instead_of_a_traceback(
    decided: tuple[Path, Path], tmp_path: Path
) -> None:
    decisions, labels = decided
    messy = tmp_path / "messy.jsonl"
    dead = b'{"error_type":"invalid_json","payload":"x","stage":"parse"}'
    messy.write_bytes(b"{oops\n\n" + dead + b"\n" + decisions.read_bytes())
    code, said = cli("report", "--decisions", messy, "--labels", labels, "--output-dir", tmp_path)
    assert code == 0, said
    assert "1 lines of" in said and "not JSON (first on line 1)" in said
    assert "blank (first on line 2)" in said and "a dead letter, not a decision" in said
    assert (tmp_path / "report.png").stat().st_size > 0


def test_report_on_decisions_that_match_no_label_is_an_error(
    decided: tuple[Path, Path], tmp_path: Path
) -> None:
    decisions, _ = decided
    other = _labels(tmp_path, {"transaction_id": "nope", "is_fraud": True})
    code, said = cli("report", "--decisions", decisions, "--labels", other)
    assert code == 2 and "has a label" in said and "nan" not in said


def test_report_on_a_dead_letter_file_is_an_error(
    decided: tuple[Path, Path], tmp_path: Path
) -> None:
    _, labels = decided
    dead = tmp_path / "dead.jsonl"
    dead.write_bytes(b'{"error_type":"invalid_json","payload":"x"}\n' * 3)
    code, said = cli("report", "--decisions", dead, "--labels", labels)
    assert code == 2 and "holds no decisions" in said and "dead letter" in said


def test_report_shows_missing_ml_scores_as_missing(
    small_world: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    events, labels, _ = small_world
    decisions = tmp_path / "rules-only.jsonl"
    assert cli("replay", "-i", events, "-o", decisions, "--no-model")[0] == 0
    code, said = cli(
        "report", "--decisions", decisions, "--labels", labels, "--output-dir", tmp_path
    )
    assert code == 0 and "ML only missing" in said and "ML score: missing on" in said


# ---- train ---------------------------------------------------------------------------------------
def test_train_refuses_too_little_data(events: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    code, said = cli("train", "--input", events, "--output", out)
    assert code == 2 and "30 valid transactions" in said and "at least 1000" in said
    assert not out.exists() and list(tmp_path.glob(".model.json*")) == []


def test_train_checks_its_output_before_the_work(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores directory permissions
        locked = tmp_path / "no-such-dir"
    started = time.monotonic()
    code, said = cli("train", "--events", "200000", "--output", locked / "model.json")
    assert code == 2 and str(locked / "model.json") in said
    assert time.monotonic() - started < 30  # refused before generating 200,000 events
