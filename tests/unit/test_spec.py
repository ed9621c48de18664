"""Job specs: defaults, overrides, and every kind of bad input (spec fields, data set, model and
precision settings), through the CLI: exit status 2, one line per problem naming the field.

Run: pytest tests/unit/test_spec.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args, get_origin, get_type_hints

import annotated_types
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from swap.cli import main
from swap.errors import SpecError
from swap.spec import Spec, apply_overrides, load_spec

from .. import fake_data as fd
from ..helpers import REPO, tiny_spec


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_minimal_spec_gets_documented_defaults(tmp_path):
    spec = load_spec(write(tmp_path / "s.yaml", "name: x\n"))
    assert spec.phase1.workers == 2 and spec.phase1.batch_size == 512
    assert spec.phase2.schedule == "cosine" and spec.data.dataset == "digits"
    assert spec.phase2_momentum == spec.phase1.momentum == 0.9
    assert spec.phase2_weight_decay == spec.phase1.weight_decay == 5e-4


def test_overrides_use_dotted_names_and_yaml_values(tmp_path):
    path = write(tmp_path / "s.yaml", "name: x\nphase2: {workers: 2}\n")
    spec = load_spec(path, ["phase2.workers=8", "phase1.weight_decay=1e-4", "phase3.bn_batches=3"])
    assert spec.phase2.workers == 8
    assert spec.phase1.weight_decay == pytest.approx(1e-4)  # "1e-4" is text to YAML 1.1
    assert spec.phase3.bn_batches == 3


def test_override_does_not_modify_its_input():
    raw = {"name": "x", "phase2": {"workers": 2}}
    apply_overrides(raw, ["phase2.workers=8"], "s.yaml")
    assert raw["phase2"]["workers"] == 2


def test_resolved_spec_round_trips(tmp_path):
    spec = load_spec(REPO / "configs" / "quickstart.yaml", ["seed=7"])
    again = load_spec(write(tmp_path / "resolved.yaml", spec.to_yaml()))
    assert again == spec


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("name: x\nbogus: 1\n", [], "s.yaml: bogus: unknown field (got 1)"),
        ("name: x\nphase2: {wokers: 4}\n", [], "s.yaml: phase2.wokers: unknown field"),
        ("name: x\n", ["phase2.workers=0"], "s.yaml: phase2.workers: must be greater than 0"),
        ("name: x\n", ["phase1.lr=-0.1"], "s.yaml: phase1.lr: must be greater than 0 (got -0.1)"),
        ("name: x\n", ["phase1.lr=fast"], "s.yaml: phase1.lr: expected a number (got 'fast')"),
        ("name: x\n", ["phase1.lr=true"], "s.yaml: phase1.lr: expected a number, not a boolean"),
        ("name: x\n", ["phase2.workers=2.5"], "s.yaml: phase2.workers: must be a valid integer"),
        ("name: x\n", ["phase2.schedule=step"], "phase2.schedule: must be 'cosine', 'constant' o"),
        ("name: x\n", ["phase2.schedule=swa"], "phase2.swa_lr: required by phase2.schedule: swa"),
        ("name: x\n", ["phase2.swa_lr=0.01"], "phase2.swa_lr: only for phase2.schedule: swa"),
        ("name: x\n", ["phase2.swag_start=0.5"], "phase2.swag_start: starts SWAG's snapshots"),
        (
            "name: x\n",
            ["phase2.swag_rank=2", "phase2.swag_start=0.999"],
            "phase2.swag_start: 0.999 of a worker's 200 steps leaves no SWAG snapshot",
        ),
        ("name: x\n", ["phase1.workers=3"], "phase1.batch_size: must be divisible by phase1.wor"),
        ("name: ../etc\n", [], "s.yaml: name: must be a safe file name"),
        ("seed: 1\n", [], "s.yaml: name: required field is missing"),
        ("name: x\nphase1: 3\n", [], "s.yaml: phase1: must be a section"),
        ("name: x\n", ["data.dataset=imagenet"], "s.yaml: data.dataset: unknown data set"),
        ("name: x\n", ["model.arch=resnet9000"], "s.yaml: model.arch: unknown architecture"),
        ("name: x\n", ["data.val_fraction=1"], "s.yaml: data.val_fraction: must be less than 1"),
        ("name: x\n", ["phase1.stop_train_accuracy=1.5"], "stop_train_accuracy: must be less"),
        ("name: x\n", ["phase1"], "s.yaml: override 'phase1': expected dotted.key=value"),
        ("name: x\n", ["name.first=a"], "s.yaml: override 'name.first=a': name is not a section"),
        ("- a\n- b\n", [], "s.yaml: a spec is a mapping of sections, not a list"),
        ("name: [x\n", [], "s.yaml: invalid YAML at line 2, column 1"),
    ],
)
def test_bad_specs_exit_2_with_one_line_naming_file_and_field(
    tmp_path, capsys, text, overrides, expected
):
    path = write(tmp_path / "s.yaml", text)
    code, err = run_cli(capsys, "validate", str(path), *overrides)
    assert code == 2
    assert expected in err
    assert all(line.startswith("swap: error: ") for line in err.splitlines())


def test_all_errors_are_reported_at_once(tmp_path, capsys):
    path = write(tmp_path / "s.yaml", "name: 'a b'\nphase1: {workers: 0, lr: x}\nextra: 1\n")
    code, err = run_cli(capsys, "validate", str(path), "phase2.epochs=-1")
    assert code == 2
    fields = [line.split(": ")[3] for line in err.splitlines()]
    assert sorted(fields) == ["extra", "name", "phase1.lr", "phase1.workers", "phase2.epochs"]


def test_missing_spec_file(tmp_path, capsys):
    code, err = run_cli(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2
    missing = tmp_path / "nope.yaml"
    assert err == f"swap: error: {missing}: cannot read the spec: No such file or directory\n"


def test_validate_show_prints_the_resolved_spec(tmp_path, capsys):
    path = write(tmp_path / "s.yaml", "name: x\n")
    assert main(["validate", str(path), "--show", "phase2.workers=3"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["phase2"]["workers"] == 3


def test_spec_error_lists_problems():
    error = SpecError(["a: b", "c: d"])
    assert error.problems == ["a: b", "c: d"] and str(error) == "a: b\nc: d"


# ---- data set, model and precision fields ----


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.dataset=cifar11"], "data.dataset: unknown data set; choose one of digits, cifar10"),
        (["data.dataset=nope.module:make"], "data.dataset: cannot import 'nope.module': "
         "ModuleNotFoundError: No module named 'nope' (got 'nope.module:make')"),
        (["data.dataset=tests.custom_code:missing"],
         "data.dataset: 'tests.custom_code' has no attribute 'missing'"),
        (["data.dataset=tests.custom_code:NOT_CALLABLE"], "data.dataset: "
         "'tests.custom_code:NOT_CALLABLE' is not callable"),
        (["data.dataset=a:b:c"], "data.dataset: expected 'package.module:function'"),
        (["data.dataset=imagefolder"], "data.train_dir: required for data.dataset: imagefolder"),
        (["data.dataset=cifar10", "data.train_dir=x"],
         "data.train_dir: only for data.dataset: imagefolder or images or parquet (not cifar10)"),
        (["data.dataset=cifar10", "data.image_size=64"], "data.image_size: only for data.data"),
        (["data.dataset=imagefolder", "data.train_dir=a", "data.test_dir=b",
          "data.image_size=224", "data.resize=200"],
         "data.resize: must be at least the crop, data.image_size (224)"),
        (["data.download=true"], "data.download: only torchvision's data sets download"),
        (["data.dataset=cifar10", "data.mean=[0.5]"],
         "data.mean: expected 3 value(s), one per channel of cifar10"),
        (["data.dataset=tests.custom_code:tensor_sets", "data.std=[1, 1]"],
         "data.std: a custom data set normalizes its own examples"),
        (["data.loader_workers=-1"], "data.loader_workers: must be greater than or equal to 0"),
        (["model.arch=resnet21"], "model.arch: unknown architecture; choose one of small_cnn"),
        (["model.arch=nope:net"], "model.arch: cannot import 'nope'"),
        (["model.depth=28"], "model.depth: only for model.arch: wide_resnet (not small_cnn)"),
        (["model.arch=wide_resnet", "model.depth=27"], "model.depth: must be 6n + 4 with n >= 1"),
        (["data.dataset=mnist", "model.arch=resnet18"],
         "model: arch 'resnet18' (torchvision) takes 3-channel images; data set mnist has 1"),
        (["resources.amp=fp16"], "resources.amp: fp16 needs resources.use_gpu: true"),
        (["resources.amp=fp8"], "resources.amp: must be 'none', 'bf16' or 'fp16'"),
    ],
)  # fmt: skip
def test_bad_workload_fields_exit_2_naming_the_field(tmp_path, capsys, overrides, expected):
    path = write(tmp_path / "s.yaml", "name: x\n")
    code = main(["validate", str(path), *overrides])
    err = capsys.readouterr().err
    assert code == 2
    assert f"swap: error: {path}: {expected}" in err
    assert all(line.startswith("swap: error: ") for line in err.splitlines())


def test_valid_workload_fields(tmp_path):
    path = write(tmp_path / "s.yaml", "name: x\n")
    spec = load_spec(
        path,
        ["data.dataset=imagefolder", "data.train_dir=t", "data.test_dir=v", "data.resize=300",
         "model.arch=wide_resnet", "model.depth=16", "model.width=4", "model.channels_last=true",
         "resources.amp=bf16", "data.mean=[0.5, 0.5, 0.5]", "data.loader_workers=4"],
    )  # fmt: skip
    assert spec.data.resize == 300 and spec.data.image_size is None and spec.data.root is None
    assert (spec.model.depth, spec.model.width, spec.model.channels_last) == (16, 4, True)
    assert spec.resources.amp == "bf16" and spec.data.mean == [0.5, 0.5, 0.5]
    assert load_spec(path, ["data.dataset=svhn"]).data.root == "data"
    gpu = load_spec(path, ["resources.use_gpu=true", "resources.amp=fp16"])  # no GPU needed
    assert gpu.resources.amp == "fp16"


def test_run_with_missing_files_exits_2_before_any_run_directory(tmp_path, capsys):
    out = tmp_path / "runs"
    path = write(
        tmp_path / "s.yaml", f"name: x\ndata: {{dataset: cifar10}}\noutput: {{dir: {out}}}\n"
    )
    code = main(["run", str(path), f"data.root={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        f"swap: error: data set cifar10: files not found under data.root {tmp_path / 'nowhere'} "
        "(missing cifar-10-batches-py/data_batch_1 and 6 more); set data.root to the folder "
        "that holds them, or set data.download: true to download them there"
    ]
    assert not out.exists()


def test_run_with_class_folders_that_differ_exits_2(tmp_path, capsys):
    fd.write_image_folder(tmp_path / "train", ["a", "b"], per_class=1)
    fd.write_image_folder(tmp_path / "test", ["a"], per_class=1)
    path = write(tmp_path / "s.yaml", f"name: x\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    code = main(
        ["run", str(path), "data.dataset=imagefolder", f"data.train_dir={tmp_path / 'train'}",
         f"data.test_dir={tmp_path / 'test'}"]
    )  # fmt: skip
    assert code == 2
    assert "swap: error: data.test_dir: its class folders differ" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def bounds(annotation) -> list:
    """The numeric bounds (annotated_types Gt, Ge, Lt, Le) anywhere in a field's annotation:
    through Annotated, pydantic's Field(...) inside it, Optional and dict values."""
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        found = bounds(base)
        for item in metadata:
            if isinstance(item, FieldInfo):
                found += [m for m in item.metadata if isinstance(m, BOUNDS)]
            elif isinstance(item, BOUNDS):
                found.append(item)
        return found
    return [b for arg in get_args(annotation) for b in bounds(arg)]


BOUNDS = (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le)


def out_of_bounds(bound) -> list[float]:
    """Values just outside `bound`, and well outside."""
    if isinstance(bound, annotated_types.Gt):
        return [bound.gt, bound.gt - 1]
    if isinstance(bound, annotated_types.Ge):
        return [bound.ge - 1, bound.ge - 0.5]
    if isinstance(bound, annotated_types.Lt):
        return [bound.lt, bound.lt + 1]
    return [bound.le + 0.5, bound.le + 1]


BOUNDED_FIELDS = [
    (f"{section}.{name}", bound, dict in map(get_origin, [info.annotation]))
    for section, model in Spec.model_fields.items()
    if isinstance(model.default, BaseModel)
    for name, info in type(model.default).model_fields.items()
    for bound in bounds(get_type_hints(type(model.default), include_extras=True)[name])
]


def test_the_schema_has_the_bounds_this_table_tests():
    """The cases below are generated from the schema; this keeps them from silently vanishing
    (every rate, size and count of the spec has a bound)."""
    named = {field for field, _, _ in BOUNDED_FIELDS}
    for field in ["phase1.lr", "phase2.lr", "phase2.swa_lr", "phase2.momentum", "phase1.momentum",
                  "phase2.weight_decay", "phase2.swag_start", "data.val_fraction",
                  "resources.cpus_per_worker", "resources.gpus_per_worker", "resources.custom",
                  "phase3.batch_size", "phase2.epochs", "phase1.stop_train_accuracy"]:  # fmt: skip
        assert field in named, field


@pytest.mark.parametrize(
    "field, bound, is_dict", BOUNDED_FIELDS, ids=[f"{f}-{b}" for f, b, _ in BOUNDED_FIELDS]
)
def test_every_bounded_field_refuses_values_outside_its_bounds(tmp_path, field, bound, is_dict):
    """Generated from the schema: each numeric field with a bound, set just outside it and
    well outside, is a spec error naming that field."""
    path = write(tmp_path / "s.yaml", "name: x\n")
    for value in out_of_bounds(bound):
        override = f"{field}={{a: {value}}}" if is_dict else f"{field}={value}"
        with pytest.raises(SpecError) as error:
            load_spec(path, [override])
        assert any(p.startswith(f"{path}: {field}") for p in error.value.problems), (
            override,
            error.value.problems,
        )


def test_phase1_ranks_may_ask_for_other_cpus_than_the_workers_after_them(tmp_path):
    from swap.phases.placement import worker_resources

    spec = tiny_spec(tmp_path, resources={"cpus_per_worker": 0.5, "phase1_cpus_per_worker": 2})
    assert worker_resources(spec, phase=1)["CPU"] == 2
    assert worker_resources(spec, phase=2)["CPU"] == 0.5
    same = tiny_spec(tmp_path, resources={"cpus_per_worker": 0.5})
    assert worker_resources(same, phase=1)["CPU"] == 0.5
