"""Data fetching, atomic writes, metrics, seeding, device choice and shape checks."""

import io
import json
import urllib.error

import pytest
import torch

import helpers.course.data as data
from helpers.course import metrics, utils


class FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes, headers: dict | None = None):
        super().__init__(payload)
        self.headers = headers or {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def use_fake_dataset(monkeypatch, payload=b"hello", url="https://example.invalid/f.txt"):
    spec = data.DataFile("f.txt", url, data.sha256_of(payload))
    monkeypatch.setitem(data.DATASETS, "fake", spec)


def test_fetch_prefers_local_copy_and_verifies_it(tmp_path, monkeypatch):
    use_fake_dataset(monkeypatch)
    (tmp_path / "f.txt").write_bytes(b"hello")
    assert data.fetch("fake", data_dir=tmp_path) == tmp_path / "f.txt"
    (tmp_path / "f.txt").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="checksum"):
        data.fetch("fake", data_dir=tmp_path)


def test_download_writes_verified_file(tmp_path, monkeypatch):
    use_fake_dataset(monkeypatch)
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"hello"))
    path = data.fetch("fake", data_dir=tmp_path)
    assert path.read_bytes() == b"hello"


def test_bad_checksum_download_leaves_no_file(tmp_path, monkeypatch):
    use_fake_dataset(monkeypatch)
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"corrupted"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.fetch("fake", data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_offline_without_copy_says_where_to_put_the_file(tmp_path, monkeypatch):
    use_fake_dataset(monkeypatch)

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataUnavailableError, match="put the file at .*f.txt"):
        data.fetch("fake", data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_local_only_dataset_missing_gives_clear_error(tmp_path):
    with pytest.raises(data.DataUnavailableError, match="eng-fra-tatoeba-small.tsv"):
        data.fetch("eng-fra-small", data_dir=tmp_path)


def test_fetch_refuses_plain_http_and_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="non-HTTPS"):
        data.download("http://example.invalid/x", None, tmp_path / "x")
    with pytest.raises(ValueError, match="unknown data set"):
        data.fetch("nope")


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.bin"
    utils.atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(utils.os, "replace", boom)
    with pytest.raises(OSError):
        utils.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_metrics_are_recorded_and_collected(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv(utils.ARTIFACTS_ENV, raising=False)
    rec = metrics.MetricRecorder("99_test", "quick")
    rec.record("test.speedup", 3.25, "x", "a made-up figure")
    with pytest.raises(ValueError, match="not finite"):
        rec.record("test.bad", float("nan"), "x")
    json_path, md_path = metrics.write_results("quick")
    got = json.loads(json_path.read_text())
    assert got == {
        "test.speedup": {
            "value": 3.25,
            "unit": "x",
            "notebook": "99_test",
            "mode": "quick",
            "description": "a made-up figure",
        }
    }
    assert "| `test.speedup` | 3.25 | x | 99_test |" in md_path.read_text()


def test_a_partial_interactive_run_keeps_the_notebooks_other_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv(utils.ARTIFACTS_ENV, raising=False)
    first = metrics.MetricRecorder("05_x", "quick")
    first.record("x.a", 1.0, "x")
    first.record("x.b", 2.0, "x")
    metrics.MetricRecorder("05_x", "quick").record("x.a", 1.5, "x")  # run again in JupyterLab, stopped after x.a
    assert {k: m["value"] for k, m in metrics.collect_metrics("quick").items()} == {"x.a": 1.5, "x.b": 2.0}
    metrics.MetricRecorder("05_x", "quick", fresh=True).record("x.a", 1.25, "x")
    assert list(metrics.collect_metrics("quick")) == ["x.a"]


def test_artifacts_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv(utils.ARTIFACTS_ENV, raising=False)
    assert utils.artifacts_dir("quick") == tmp_path / "artifacts" / "quick"
    monkeypatch.setenv(utils.ARTIFACTS_ENV, str(tmp_path / "stage"))
    assert utils.artifacts_dir("full") == tmp_path / "stage" and (tmp_path / "stage").is_dir()
    assert utils.artifacts_dir("quick") == tmp_path / "stage" / "quick"
    monkeypatch.setenv(utils.ARTIFACTS_ENV, "relative/stage")
    assert utils.artifacts_dir() == tmp_path / "relative" / "stage"


def test_seed_device_and_shape_check():
    utils.set_seed(3)
    a = torch.rand(3)
    utils.set_seed(3)
    torch.testing.assert_close(a, torch.rand(3))
    assert utils.get_device("cpu").type == "cpu"
    assert utils.get_device().type in {"cpu", "cuda", "mps"}
    utils.check_shape(torch.zeros(2, 3), (2, None))
    with pytest.raises(ValueError, match=r"x has shape \(2, 3\), expected \(2, 4\)"):
        utils.check_shape(torch.zeros(2, 3), (2, 4), "x")


def test_mode_from_environment(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "quick")
    assert utils.default_mode() == "quick"
    monkeypatch.setenv("COURSE_MODE", "fast")
    with pytest.raises(ValueError, match="COURSE_MODE"):
        utils.default_mode()


def test_readme_results_section_is_rewritten_from_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv(utils.ARTIFACTS_ENV, raising=False)
    metrics.MetricRecorder("07_x", "full").record("x.loss", 1.4567, "nats", "a loss")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold table\n<!-- results:end -->\noutro\n")
    assert metrics.sync_readme(readme)
    text = readme.read_text()
    assert "old table" not in text and "| `x.loss` | 1.457 | nats | 07_x | a loss |" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert not metrics.sync_readme(readme)
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="results:start"):
        metrics.sync_readme(readme)


def test_metric_values_are_formatted_without_positive_exponents():
    from helpers.course.metrics import format_value

    assert format_value(15740.4) == "15,740"
    assert format_value(1816896.0) == "1,816,896"
    assert format_value(1.5407667) == "1.541"
    assert format_value(2.384e-07) == "2.384e-07"


def test_relative_names_a_staged_file_where_a_successful_run_puts_it(tmp_path, monkeypatch):
    stage = tmp_path / "staging" / "06_char_gpt"
    (stage / "metrics").mkdir(parents=True)
    monkeypatch.setenv(utils.ARTIFACTS_ENV, str(stage))
    assert utils.relative(stage / "metrics" / "06.json") == str(tmp_path / "staging/06_char_gpt/metrics/06.json")
    (stage / utils.STAGE_MARK).write_text("1")  # run_all.py's staging copy: shown as the artifacts/ it stands for
    assert utils.relative(stage / "metrics" / "06.json") == "artifacts/metrics/06.json"
    assert utils.relative(stage / "quick" / "figures" / "a.png") == "artifacts/quick/figures/a.png"
    assert utils.relative(utils.PROJECT_ROOT / "notebooks") == "notebooks"


def test_the_lock_pins_every_dependency_that_pyproject_declares():
    import re
    import tomllib

    project = tomllib.loads((utils.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    names = {re.match(r"[A-Za-z0-9_.\-]+", d)[0].lower().replace("_", "-") for d in declared}
    lock = (utils.PROJECT_ROOT / "constraints.txt").read_text()
    pins = dict(re.findall(r"(?m)^([A-Za-z0-9_.\-]+)==(\S+)$", lock))
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    assert names <= set(pins), f"declared but not locked (run make lock): {sorted(names - set(pins))}"
    assert pins["torch"] == "2.13.0", "the lock keeps the version every platform has, without a local label"
    assert "make lock" in lock.splitlines()[4], "the lock is made by make lock, not by hand"


def test_an_installed_course_works_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(utils.ROOT_ENV, raising=False)
    assert utils.project_root() == utils.PROJECT_ROOT  # a checkout: its own folder
    site = tmp_path / "site-packages" / "helpers" / "course"
    site.mkdir(parents=True)
    monkeypatch.setattr(utils, "__file__", str(site / "utils.py"))  # installed: no pyproject.toml two levels up
    monkeypatch.chdir(tmp_path)
    assert utils.project_root() == tmp_path.resolve()
    monkeypatch.setenv(utils.ROOT_ENV, str(tmp_path / "course"))
    assert utils.project_root() == (tmp_path / "course").resolve()
