"""Resumable folders keep every setting that changes a number: a resume with another one is refused
(old and new value named) before any model work, and config.json keeps the first command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from experiment_scripts import load_experiment

from numina.capture import SelfAttentionCapture
from numina.capture.spec import self_attention_defaults
from numina.method.presets import PRESETS, NuminaOptions, preset
from numina.run_folder import check_resumable, device_type, write_config


class Loaded(Exception):
    """Raised in place of loading the pipeline: the run got past every check."""


def _loaded(*args: object, **kwargs: object) -> None:
    """The scripts' `pipeline_from_args`, stopped where the model would load."""
    raise Loaded


def _common(tiny_folder: Path, out: Path) -> list[str]:
    return [
        "--model", str(tiny_folder), "--out", str(out), "--frames", "9", "--height", "64", "--width", "64",
        "--steps", "4", "--wandb", "disabled", "--dtype", "float32", "--device", "cpu",
    ]  # fmt: skip


SCRIPT_ARGS = {
    "countbench": ["--prompts", "3", "--seeds", "1", "--counter", "exact"],
    "ablate_heads": ["--prompts", "3", "--counter", "exact", "--grid", '{"cross_heads": ["mean"]}'],
    "diagnose_numerals": ["--prompts", "3"],
    "instance_heads": ["--prompt-set", "countworld", "--prompts", "3"],
}
# (script, changed option, its new value, what the refusal names)
CHANGES = [
    ("countbench", "--dtype", "bfloat16", 'dtype: "float32" before, "bfloat16" now'),
    ("countbench", "--device", "meta", 'device: "cpu" before, "meta" now'),
    ("countbench", "--attention-backend", "native", 'attention_backend: null before, "native" now'),
    ("ablate_heads", "--palette", '{"cat": [1, 0, 0]}', 'palette: null before, {"cat": [1, 0, 0]} now'),
    ("ablate_heads", "--dtype", "bfloat16", 'dtype: "float32" before, "bfloat16" now'),
    ("ablate_heads", "--attention-backend", "native", "attention_backend: null before"),
    ("diagnose_numerals", "--dtype", "bfloat16", 'dtype: "float32" before, "bfloat16" now'),
    ("diagnose_numerals", "--flow-shift", "3", "flow_shift: 5.0 before, 3.0 now"),
    ("diagnose_numerals", "--device", "meta", 'device: "cpu" before, "meta" now'),
    ("instance_heads", "--device", "meta", 'device: "cpu" before, "meta" now'),
    ("instance_heads", "--attention-backend", "native", "attention_backend: null before"),
]


@pytest.mark.parametrize(("script", "option", "value", "named"), CHANGES)
def test_a_resume_with_another_setting_is_refused_before_any_model_work(
    script: str,
    option: str,
    value: str,
    named: str,
    tiny_folder: Path,
    countbench_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = load_experiment(script)
    monkeypatch.setattr(module, "pipeline_from_args", _loaded)
    first = [*_common(tiny_folder, tmp_path / "run"), "--countbench", str(countbench_dir)]
    first += SCRIPT_ARGS[script]
    with pytest.raises(Loaded):  # the first run gets as far as loading the model
        module.main(first)
    config = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(SystemExit, match="resume it with the same settings") as refused:
        module.main([*first, option, value])
    assert named in str(refused.value)
    assert (tmp_path / "run" / "config.json").read_text() == config


@pytest.mark.parametrize("script", sorted(SCRIPT_ARGS))
def test_a_capture_default_changed_since_the_first_run_is_refused(
    script: str, tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new version whose self-attention capture computes otherwise by default (float16 map products
    instead of TF32, say) changes every captured number: its folder is not resumed by it."""
    module = load_experiment(script)
    monkeypatch.setattr(module, "pipeline_from_args", _loaded)
    first = [
        *_common(tiny_folder, tmp_path / "run"),
        "--countbench",
        str(countbench_dir),
        *SCRIPT_ARGS[script],
    ]
    with pytest.raises(Loaded):
        module.main(first)
    # On a CPU the "auto" products are TF32's, as recorded before "auto" existed: such folders resume.
    assert SelfAttentionCapture(layers=()).products == "auto"
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["self_attention_defaults"]
    assert recorded["products"] == "tf32"
    monkeypatch.setattr(
        module, "self_attention_defaults", lambda device: {**self_attention_defaults(device), "products": "x"}
    )
    with pytest.raises(SystemExit, match=r'self_attention_defaults.products: "[a-z0-9]+" before, "x" now'):
        module.main(first)


def test_a_setting_the_folder_does_not_record_counts_as_changed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model": "tiny"}))
    with pytest.raises(SystemExit, match=r"dtype: \(not recorded\) before, \"float32\" now"):
        check_resumable(tmp_path, {"model": "tiny", "dtype": "float32"}, ("model", "dtype"), "x.py")
    check_resumable(tmp_path, {"model": "tiny"}, ("model",), "x.py")


def test_a_changed_field_of_a_mapping_is_named_by_its_dotted_name(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"options": {"layout": {"contrast": 3.0, "bins": 8}}}))
    with pytest.raises(SystemExit, match=r"\(options.layout.contrast: 3.0 before, 4.0 now\); resume"):
        check_resumable(tmp_path, {"options": {"layout": {"contrast": 4.0, "bins": 8}}}, ("options",), "x.py")
    with pytest.raises(SystemExit, match=r"options.layout.bins: 8 before, \(not recorded\) now"):
        check_resumable(tmp_path, {"options": {"layout": {"contrast": 3.0}}}, ("options",), "x.py")
    check_resumable(tmp_path, {"options": {"layout": {"bins": 8, "contrast": 3.0}}}, ("options",), "x.py")


def test_a_refusal_names_the_code_versions_that_made_the_results_when_this_one_differs(
    tmp_path: Path,
) -> None:
    """A default that changed with the code cannot be passed back as an option: the refusal says which
    version made the folder's results."""
    record = {
        "defaults": {"products": "tf32"},
        "code_version": "0.1.0+ga",
        "resumed": [{"code_version": "0.1.0+gb"}],
    }
    (tmp_path / "config.json").write_text(json.dumps(record))
    new = {"defaults": {"products": "float16"}}
    with pytest.raises(
        SystemExit,
        match=r"--out\. Its results were made by code version 0.1.0\+ga, 0.1.0\+gb, this is 0.1.0\+gc",
    ):
        check_resumable(tmp_path, {**new, "code_version": "0.1.0+gc"}, ("defaults",), "x.py")
    with pytest.raises(SystemExit, match=r"another --out\.$"):  # the same version: nothing to add
        check_resumable(tmp_path, {**new, "code_version": "0.1.0+gb"}, ("defaults",), "x.py")


def test_per_entry_settings_may_gain_an_entry_but_not_change_one(tmp_path: Path) -> None:
    """One entry per method: a resume may add a method; a method it had keeps its options."""
    (tmp_path / "config.json").write_text(
        json.dumps({"methods": {"official": {"scale": 1.0}, "baseline": None}})
    )
    check_resumable(
        tmp_path, {"methods": {"official": {"scale": 1.0}, "new": {}}}, ("methods",), "x.py", ("methods",)
    )
    with pytest.raises(SystemExit, match=r"methods.official.scale: 1.0 before, 2.0 now"):
        check_resumable(
            tmp_path, {"methods": {"official": {"scale": 2.0}}}, ("methods",), "x.py", ("methods",)
        )
    with pytest.raises(SystemExit, match=r"methods.new: \(not recorded\) before"):  # not per entry: all of it
        check_resumable(tmp_path, {"methods": {"official": {"scale": 1.0}, "new": {}}}, ("methods",), "x.py")


def test_countbench_keeps_the_options_each_preset_had(
    tiny_folder: Path, countbench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preset whose defaults changed since a folder's first run is refused there, by field; a resume
    that adds a method keeps the options recorded for the others."""
    module = load_experiment("countbench")
    monkeypatch.setattr(module, "pipeline_from_args", _loaded)
    first = [*_common(tiny_folder, tmp_path / "run"), "--countbench", str(countbench_dir)]
    first += [*SCRIPT_ARGS["countbench"], "--methods", "official"]
    with pytest.raises(Loaded):
        module.main(first)
    with pytest.raises(Loaded):  # adding a method resumes
        module.main([*first[:-1], "official,improved"])
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["method_options"]
    assert NuminaOptions.from_dict(recorded["official"]) == preset("official") and "improved" in recorded
    with pytest.raises(Loaded):  # and the record keeps official's options without it
        module.main([*first[:-1], "improved"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["method_options"] == recorded
    monkeypatch.setitem(PRESETS, "official", replace(PRESETS["official"], modulation_scale=2.0))
    with pytest.raises(SystemExit, match=r"method_options.official.modulation_scale: 1.0 before, 2.0 now"):
        module.main(first)


@pytest.mark.parametrize("damage", ['{"model": "tiny", "dty', "[1, 2]", "\udcff"])
def test_a_damaged_config_is_refused_with_a_clear_message(tmp_path: Path, damage: str) -> None:
    (tmp_path / "config.json").write_text(damage, errors="surrogateescape")
    with pytest.raises(
        SystemExit, match=r"^x.py: .*config.json is damaged .*restore it, or pass another --out"
    ):
        check_resumable(tmp_path, {"model": "tiny"}, ("model",), "x.py")


def test_config_keeps_the_first_command_and_appends_resumed_ones(tmp_path: Path) -> None:
    write_config(tmp_path, {"seeds": 1, "code_version": "a", "command": ["x.py", "--seeds", "1"]})
    write_config(tmp_path, {"seeds": 1, "code_version": "a", "command": ["x.py", "--seeds", "1"]})
    write_config(tmp_path, {"seeds": 2, "code_version": "b", "command": ["x.py", "--seeds", "2"]})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["command"] == ["x.py", "--seeds", "1"] and config["code_version"] == "a"
    assert config["seeds"] == 2
    assert config["resumed"] == [{"command": ["x.py", "--seeds", "2"], "code_version": "b"}]


def test_the_device_kind_is_kept_not_its_index() -> None:
    assert [device_type(d) for d in ("cpu", "cuda", "cuda:1", "mps")] == ["cpu", "cuda", "cuda", "mps"]
