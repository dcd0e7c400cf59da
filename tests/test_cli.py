"""The CLI through typer's CliRunner (train, export, sample), plus the real console script's --help speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import write_images
from gantools.cli import app
from gantools.training import load_checkpoint

runner = CliRunner()
TINY = ["--image-size", "16", "--nz", "8", "--ngf", "8", "--ndf", "8", "--batch-size", "4"]


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error:")
    for f in fragments:
        assert f in text, text


def test_help_lists_commands_fast() -> None:
    times = []
    for _ in range(2):  # best of two: the machine may be shared
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "gantools", "--help"], capture_output=True, text=True,
                             timeout=60)
        times.append(time.perf_counter() - t)
    elapsed = min(times)
    assert out.returncode == 0
    for cmd in ("train", "export", "sample"):
        assert cmd in out.stdout
    assert elapsed < 1.5, f"gantools --help took {elapsed:.2f}s"
    # and torch is not imported by --help
    probe = "import sys; from gantools.cli import app; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_command_help() -> None:
    r = run("train", "--help")
    assert r.exit_code == 0
    for opt in ("--data", "--steps", "--epochs", "--resume", "--loss", "--d-steps", "--eval-every", "--device"):
        assert opt in r.output
    assert "--interpolate" in run("sample", "--help").output


def test_train_resume_export_sample(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run("train", "--data", image_folder, *TINY, "--steps", "3", "--out", out, "--quiet", "--json",
            "--log-every", "1")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["run_dir"] == str(out) and summary["Loss_D"] > 0
    assert (out / "model.safetensors").is_file() and (out / "stats.jsonl").is_file()
    assert "train: 3/3" in r.stderr  # --quiet: plain log lines
    # resume to 5 steps (table output)
    r = run("train", "--resume", out, "--steps", "5", "--quiet")
    assert r.exit_code == 0, r.output
    assert "training done" in r.stdout and load_checkpoint(out)["step"] == 5
    # resume cannot change what is trained
    assert_one_line_error(run("train", "--resume", out, "--steps", "6", "--nz", "16"), "nz cannot change")
    assert run("train", "--resume", out, "--out", tmp_path / "x").exit_code == 2
    # export
    (out / "model.safetensors").unlink()
    r = run("export", out)
    assert r.exit_code == 0 and r.stdout.strip() == str(out / "model.safetensors")
    # sample: grid, interpolation, arithmetic
    r = run("sample", "--model", out, "--n", "6", "--nrow", "3", "--seed", "2", "--out", tmp_path / "g.png")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "g.png").size == (2 + 3 * 18, 2 + 2 * 18)
    r = run("sample", "-m", out, "--interpolate", "--seed2", "5", "--frames", "4", "-o", tmp_path / "i.png")
    assert r.exit_code == 0, r.output  # the strip is labelled (seeds, method, t): sampling.interpolation_figure
    from gantools.sampling import interpolate, interpolation_figure

    strip = interpolation_figure(interpolate(out, seed=0, seed2=5, frames=4, device="cpu"), seed=0, seed2=5)
    assert Image.open(tmp_path / "i.png").size == (strip.shape[2], strip.shape[1]) and strip.shape[2] > 4 * 96
    r = run("sample", "-m", out, "--arithmetic", "0,1-2+3", "-o", tmp_path / "a.png")
    assert r.exit_code == 0 and (tmp_path / "a.png").is_file()
    assert run("sample", "-m", out, "--interpolate", "--arithmetic", "0-1+2").exit_code == 2
    assert "are for --interpolate" in _usage_error(run("sample", "-m", out, "--frames", "4"))
    assert_one_line_error(run("sample", "-m", out, "--arithmetic", "0,1+2", "-o", tmp_path / "b.png"), "A-B+C")


def test_train_adaptive_augmentation_options(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ada"
    r = run("train", "--data", image_folder, *TINY, "--steps", "4", "--out", out, "--quiet", "--log-every", "1",
            "--augment", "translation", "--augment-p", "0.5", "--augment-target", "0.6")
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert (config["augment"], config["augment_p"], config["augment_target"]) == ("translation", 0.5, 0.6)
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["augment_p"] != 0.5 for r in rows] == [False, False, False, True]  # adjusted after 4 D steps
    assert run("train", "--data", image_folder, *TINY, "--steps", "1", "--out", tmp_path / "off", "--quiet",
               "--augment", "off").exit_code == 0
    assert_one_line_error(run("train", "--data", image_folder, *TINY, "--steps", "1", "--out", tmp_path / "x",
                              "--augment-target", "0.6"), "give augment too")
    assert "--augment-p" in _usage_error(run("train", "--augment-p", "2"))


def test_train_bad_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("train", "--data", tmp_path / "empty", *TINY, "--steps", "1", "--out", tmp_path / "r"),
                          "no images in")
    assert_one_line_error(run("train", "--data", tmp_path / "nowhere", "--steps", "1"), "no dataset")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"junk")
    assert_one_line_error(run("train", "--data", broken, *TINY, "--steps", "1", "--out", tmp_path / "r"),
                          "no readable images")
    assert not (tmp_path / "r").exists()


def test_train_warns_once_about_corrupt_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_images(data, 6, size=16)
    for i in range(2):
        (data / f"bad{i}.jpg").write_bytes(b"\xff\xd8 broken")
    r = run("train", "--data", data, *TINY, "--steps", "1", "--out", tmp_path / "r", "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("skipped 2 unreadable") == 1


def test_bad_options(image_folder: Path, tmp_path: Path) -> None:
    assert_one_line_error(run("train", "--data", image_folder, "--image-size", "20"), "16, 32, 64, 128")
    assert_one_line_error(run("train", "--data", image_folder, "--steps", "2", "--epochs", "1"), "not both")
    assert run("train", "--loss", "wasserstein").exit_code == 2  # enum choices, checked by typer
    assert run("train", "--recipe", "fast").exit_code == 2
    for args, fragment in ((("--lr", "1e-3", "--lr-g", "1e-4"), "--lr sets both"),
                           (("--betas", "0.5"), "--betas takes two numbers")):
        r = run("train", *args)
        assert r.exit_code == 2 and fragment in " ".join(r.output.split()), r.output
    assert_one_line_error(run("export", tmp_path), "no checkpoint")
    assert_one_line_error(run("sample", "--model", tmp_path / "missing.safetensors"), "no model")
    assert_one_line_error(run("train", "--data", image_folder, *TINY, "--steps", "1", "--device", "tpu"),
                          "unknown device")


def _usage_error(result) -> str:
    """typer's boxed usage error as one line of words (the box may wrap long paths)."""
    assert result.exit_code == 2, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def test_output_paths_are_checked_before_work_and_fail_in_one_line(image_folder: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    a_file = tmp_path / "taken.png"
    a_file.write_bytes(b"")
    r = run("train", "--data", image_folder, *TINY, "--steps", "1", "--out", a_file)
    assert "is a file; give a directory" in _usage_error(r) and not (tmp_path / "runs").exists()
    out = tmp_path / "run"
    assert run("train", "--data", image_folder, *TINY, "--steps", "1", "--out", out, "--quiet").exit_code == 0
    assert "is a directory; give a file name" in _usage_error(run("sample", "-m", out, "-o", tmp_path))
    # An OS-level failure on a path the user gave: one line naming the path, no traceback.
    assert_one_line_error(run("sample", "-m", out, "-o", a_file / "grid.png"), str(a_file))
    # A shipped model's companion is never replaced by default.
    shipped = tmp_path / "pretrained" / "tiny"
    shipped.mkdir(parents=True)
    (out / "model.safetensors").rename(shipped / "model.safetensors")
    (shipped / "encoder.safetensors").write_bytes(b"shipped")
    monkeypatch.setenv("GANTOOLS_PRETRAINED", str(tmp_path / "pretrained"))
    assert "would replace the shipped" in _usage_error(run("encoder", "train", "-m", "tiny", "--steps", "1"))
    assert (shipped / "encoder.safetensors").read_bytes() == b"shipped"


# ---------------------------------------------------------------------------------------------
# ablate / insert / rank / edit: concepts the model does not draw, early checks, --strength


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model file, its layer2 colour dissection report, a 16 px image): the planted model of
    test_interventions draws white and gray only, never red."""
    from conftest import planted_gan
    from gantools.data import save_image
    from gantools.dissection import dissect
    from gantools.models import load_model, save_model

    gan = planted_gan()
    root = tmp_path_factory.mktemp("planted")
    model = save_model(root / "model.safetensors", gan.generator, gan.discriminator)
    dissect(load_model(model), layers=(2,), segmenter="color", n=16, top_k=0).save(root / "rep", html=False)
    image = save_image(torch.full((3, 16, 16), 200, dtype=torch.uint8), root / "photo.png")
    return model, root / "rep", image


def _iv_common(model: Path) -> list:
    return ["--model", model, "--layer", "2", "--segmenter", "color", "--device", "cpu", "--quiet"]


def test_a_concept_the_model_does_not_draw_is_a_one_line_error(planted, no_work) -> None:
    model, report, image = planted
    for command in (["ablate"], ["insert", "--at", "0.5,0.5"], ["edit", image, "--steps", "2", "--at", "0.5,0.5"]):
        concept = ["--add", "red"] if command[0] == "edit" else ["--concept", "red", "--n", "4"]
        r = run(*command, *_iv_common(model), *concept, "--top", "2", "--report", report)
        assert_one_line_error(r, "no unit of layer2 matches 'red'", "best IoU is 0.0000", "interpretable line 0.04",
                              "may not draw red", "give the units yourself (--units)", "(--allow-weak)")
        assert "allow_weak" not in r.output and "units=" not in r.output  # CLI flags, not Python keywords


def test_allow_weak_goes_ahead_and_says_so(planted) -> None:
    model, report, _ = planted
    r = run("ablate", *_iv_common(model), "--concept", "red", "--top", "2", "--report", report, "--n", "4",
            "--allow-weak", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["units"]) == 2 and out["effect"]["before"] == out["effect"]["after"] == 0.0
    assert "below the interpretable line" in out["settings"]["units_from"]
    assert "may not draw it" in r.stderr
    # Units given by number are never second-guessed.
    r = run("insert", *_iv_common(model), "--concept", "red", "--units", "0", "--value", "6", "--at", "0.5,0.5",
            "--n", "4", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["units"] == [0]


def test_weak_concept_found_by_a_dissection_on_the_fly(planted) -> None:
    model, _, _ = planted
    r = run("insert", *_iv_common(model), "--concept", "red", "--at", "0.5,0.5", "--dissect-n", "8", "--n", "4")
    assert r.exit_code == 1 and "Traceback" not in r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: no unit of layer2 matches 'red'") and "--allow-weak" in last


def test_rank_several_concepts_in_one_pass_stores_each(planted, tmp_path) -> None:
    import shutil

    model, report, _ = planted
    rep = shutil.copytree(report, tmp_path / "rep")
    r = run("rank", *_iv_common(model), "--concept", "white,gray", "--n", "4", "--report", rep, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    assert set(got) == {"white", "gray"} and got["white"]["concept"] == "white"
    ace = json.loads((rep / "report.json").read_text())["layers"]["layer2"]["ace"]
    assert set(ace) == {"white", "gray"} and len(ace["white"]) == 8
    assert_one_line_error(run("rank", *_iv_common(model), "--concept", "white,sky", "--n", "4"), "unknown concept 'sky'")
    assert "name a concept" in _usage_error(run("rank", *_iv_common(model), "--concept", ",", "--n", "4"))


def test_rank_greedy_chooses_units_jointly(planted, tmp_path) -> None:
    from gantools.ranking import greedy_units

    model, _, _ = planted
    r = run("rank", *_iv_common(model), "--concept", "white", "--greedy", "2", "--n", "4", "--json",
            "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    got = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))
    expected = greedy_units(model, 2, "white", 2, n=4, segmenter="color", device="cpu")
    assert got["units"] == list(expected) and got["joint_ace"] == pytest.approx(expected.joint_ace, abs=1e-9)
    assert json.loads((tmp_path / "g" / "greedy.json").read_text())["units"] == list(expected)
    r = run("rank", *_iv_common(model), "--concept", "white,gray", "--greedy", "1", "--n", "4")
    flat = "".join(r.stdout.split())  # the table titles wrap
    assert r.exit_code == 0 and "chosenjointlyforwhite" in flat and "chosenjointlyforgray" in flat
    assert "name the concepts" in _usage_error(run("rank", *_iv_common(model), "--concept", "all", "--greedy", "2"))


def test_intervention_values_are_checked_before_any_work(planted, no_work) -> None:
    model, report, image = planted
    common = _iv_common(model)
    # --n 1 gives no confidence interval: refused when parsing (it used to come after a dissection).
    for command in (["ablate"], ["insert", "--at", "0.5,0.5"], ["rank"]):
        text = _usage_error(run(*command, *common, "--concept", "white", "--n", "1"))
        assert "Invalid value for '--n'" in text and "2" in text.split("'--n'")[-1], text
    assert "--rank ace reads the causal ranking" in _usage_error(
        run("ablate", *common, "--concept", "white", "--rank", "ace", "--n", "4"))
    assert "--rank ace reads the causal ranking" in _usage_error(
        run("edit", image, *common, "--remove", "white", "--rank", "ace"))
    assert "is read from a dissection" in _usage_error(run("rank", *common, "--concept", "white", "--value", "mean"))
    assert_one_line_error(run("insert", *common, "--concept", "white", "--at", "0.5,1.5", "--n", "4"),
                          "between 0 and 1")
    assert_one_line_error(run("edit", image, *common, "--add", "white", "--at", "2,0.5"), "between 0 and 1")
    assert_one_line_error(run("edit", image, *common, "--add", "sky", "--at", "0.5,0.5"), "unknown concept 'sky'")
    assert_one_line_error(run("ablate", *common, "--units", "0,8", "--n", "4"), "numbered 0 to 7")
    assert_one_line_error(run("edit", image, *common, "--remove", "white", "--units", "9"), "numbered 0 to 7")


def test_edit_strength_is_one_flag_everywhere(planted) -> None:
    model, _, _ = planted
    for command in ("ablate", "insert", "edit"):
        text = run(command, "--help").output
        assert "--strength" in text and "--allow-weak" in text and "--alpha" not in text, command
    r = run("ablate", *_iv_common(model), "--units", "0", "--strength", "0.5", "--n", "4", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settings"]["strength"] == 0.5
    assert run("ablate", *_iv_common(model), "--units", "0", "--strength", "1.5").exit_code == 2
    assert run("ablate", *_iv_common(model), "--units", "0", "--alpha", "0.5").exit_code == 2


# ---------------------------------------------------------------------------------------------
# Ctrl-C: every long command says in one line what it kept, exits 130, no traceback


def _interrupted(result, *fragments: str) -> str:
    assert result.exit_code == 130, result.output
    text = result.output.strip()
    assert "Traceback" not in text and "Aborted" not in text, text
    line = text.splitlines()[-1]
    assert line.startswith("interrupted"), text
    for f in fragments:
        assert f in line, line
    return line


def _raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("module, function, command, what", [
    ("gantools.dissection", "dissect", ["dissect", "--layer", "2", "--n", "4", "--segmenter", "color"], "dissect"),
    ("gantools.classifier", "train_classifier", ["classifier", "train", "--epochs", "1"], "classifier"),
    ("gantools.segmenters", "train_segmenter", ["segmenter", "train", "--steps", "1"], "segmenter"),
    ("gantools.restoration.encoder", "train_encoder", ["encoder", "train", "--steps", "1"], "encoder"),
])
def test_ctrl_c_says_that_nothing_was_kept(module, function, command, what, tiny_model_file: Path, image_folder: Path,
                                           tmp_path: Path, monkeypatch) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module(module), function, _raise_interrupt)
    out = tmp_path / ("d" if what == "dissect" else f"{what}.safetensors")
    args = [*command, "--out", out]
    if what in ("dissect", "encoder"):
        args += ["--model", tiny_model_file]
    if what == "classifier":
        args += ["--data", image_folder]
    line = _interrupted(run(*args, "--quiet"), "nothing was", "run the command again")
    assert not out.exists() and str(out) not in line
    if what != "dissect":  # a file from before is named, and left alone
        out.write_bytes(b"before")
        line = _interrupted(run(*args, "--quiet"), f"the existing {out} is unchanged")
        assert out.read_bytes() == b"before"


def test_ctrl_c_during_eval_names_the_cached_statistics_it_kept(tiny_model_file: Path, image_folder: Path,
                                                                tmp_path: Path, monkeypatch) -> None:
    import gantools.metrics as M

    monkeypatch.setenv("GANTOOLS_CACHE", str(tmp_path / "cache"))
    args = ["eval", "--model", tiny_model_file, "--data", image_folder, "--n", "8", "--quiet"]
    monkeypatch.setattr(M, "evaluate", _raise_interrupt)
    line = _interrupted(run(*args), "nothing was written")
    assert "cache" not in line and not (tmp_path / "cache").exists()

    def stats_then_interrupt(*a, **kw):  # the reference statistics were complete, the samples were not
        M.cache_dir().mkdir(parents=True, exist_ok=True)
        (M.cache_dir() / "features-abc.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "evaluate", stats_then_interrupt)
    _interrupted(run(*args), "kept the reference statistics", "1 file(s)", str(tmp_path / "cache"), "reuses them")


def test_ctrl_c_during_invert_names_only_what_was_written(tiny_model_file: Path, tmp_path: Path, monkeypatch) -> None:
    import gantools.restoration.inversion as inv

    images = write_images(tmp_path / "in", 3, size=16)
    out = tmp_path / "inv_int"
    args = ["invert", *images, "--model", tiny_model_file, "--steps", "1", "--restarts", "1", "--batch-size", "2",
            "--out", out, "--quiet"]
    real = inv.invert
    monkeypatch.setattr(inv, "invert", _raise_interrupt)
    line = _interrupted(run(*args), "nothing was written")
    assert not out.exists() and str(out) not in line

    def one_batch_then_interrupt(*a, on_batch=None, **kw):
        def stop_after(part):
            on_batch(part)
            raise KeyboardInterrupt
        return real(*a, on_batch=stop_after, **kw)

    monkeypatch.setattr(inv, "invert", one_batch_then_interrupt)
    line = _interrupted(run(*args), "kept the 2 result(s)", f"{out}/", "img001")
    assert sorted(p.name for p in out.glob("*.png")) == ["img000.png", "img000_compare.png", "img001.png",
                                                          "img001_compare.png"]


def _returns_unsaved(*args, **kwargs):
    """A finished result whose save() is interrupted: Ctrl-C while the output folder is written."""
    class Result:
        def save(self, out):
            Path(out).mkdir(parents=True, exist_ok=True)
            raise KeyboardInterrupt
    return Result()


@pytest.mark.parametrize("module, function, command", [
    ("gantools.sampling", "sample", ["sample", "-o", "{tmp}/s.png"]),
    ("gantools.training", "export", ["export", "{tmp}"]),
    ("gantools.interventions", "ablate", ["ablate", "--layer", "2", "--units", "0", "-o", "{tmp}/out"]),
    ("gantools.interventions", "insert", ["insert", "--layer", "2", "--units", "0", "--at", "0.5,0.5"]),
    ("gantools.ranking", "rank_concepts", ["rank", "--layer", "2", "--concept", "gray"]),
    ("gantools.editing", "edit", ["edit", "{tmp}/photo.png", "--layer", "2", "--remove", "gray", "--units", "0"]),
    ("gantools.segmenters", "evaluate_segmenter", ["segmenter", "eval", "--segmenter", "color"]),
    ("gantools.classifier", "evaluate_classifier", ["classifier", "eval", "--data", "{tmp}", "--classifier",
                                                    "{tmp}/c.safetensors"]),
    ("gantools.scenes", "write_scenes", ["data", "scenes", "{tmp}/scenes"]),
])
def test_ctrl_c_in_every_long_command_says_what_was_kept(module, function, command, tiny_model_file: Path,
                                                         tmp_path: Path, monkeypatch) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module(module), function, _raise_interrupt)
    work = tmp_path / "work"
    work.mkdir()
    args = [a.replace("{tmp}", str(work)) for a in command]
    if command[0] in ("sample", "ablate", "insert", "rank", "edit"):
        args += ["--model", tiny_model_file]
    line = _interrupted(run(*args))
    assert "nothing was written" in line and "run the command again" in line
    assert not list(work.iterdir())


def test_ctrl_c_while_writing_names_the_folder(tiny_model_file: Path, tmp_path: Path, monkeypatch) -> None:
    import gantools.interventions

    monkeypatch.setattr(gantools.interventions, "ablate", _returns_unsaved)
    out = tmp_path / "abl"
    line = _interrupted(run("ablate", "--layer", "2", "--units", "0", "--model", tiny_model_file, "-o", out))
    assert f"while writing {out}" in line and "run the command again to rewrite it" in line


def test_ctrl_c_during_data_scenes_names_the_unfinished_folder(tmp_path: Path, monkeypatch) -> None:
    import gantools.scenes

    def some_scenes_then_interrupt(out, **kwargs):
        (Path(out) / "images").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(gantools.scenes, "write_scenes", some_scenes_then_interrupt)
    out = tmp_path / "scenes"
    line = _interrupted(run("data", "scenes", out, "--n", "4"))
    assert f"{out}/ holds the scenes written so far" in line and "run the same command again" in line


def _all_commands(group=None, path=()):
    import typer.main

    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _all_commands(command, path + (name,))
        else:
            yield path + (name,), command


# Commands still allowed to spell a default by hand in their help: none (paint was the last).
HAND_WRITTEN_DEFAULTS_LEFT: set[tuple[str, ...]] = set()


def test_every_help_shows_defaults_in_one_style() -> None:
    seen = 0
    for path, _ in _all_commands():
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300"})
        assert r.exit_code == 0, (path, r.output)
        if path not in HAND_WRITTEN_DEFAULTS_LEFT:  # typer's [default: X] only
            assert "(default:" not in r.output.replace("[default: (", "[default: "), path
        seen += 1
    assert seen >= 17


def test_shared_spellings_hold_across_commands() -> None:
    """#22: one spelling per idea: --strength (never --alpha), -c is --concept, --frames counts a strip."""
    for path, command in _all_commands():
        for param in command.params:
            opts = set(getattr(param, "opts", [])) | set(getattr(param, "secondary_opts", []))
            assert "--alpha" not in opts and "--targets" not in opts, path
            if "-c" in opts:
                assert "--concept" in opts, path
    sample = dict(_all_commands())[("sample",)]
    assert "--frames" in {o for p in sample.params for o in p.opts} and "--steps" not in {o for p in sample.params
                                                                                           for o in p.opts}


@pytest.mark.parametrize("path, function", [
    (("dissect",), "gantools.dissection:dissect"), (("ablate",), "gantools.interventions:ablate"),
    (("insert",), "gantools.interventions:insert"), (("rank",), "gantools.ranking:rank_concepts"),
    (("edit",), "gantools.editing:edit"), (("invert",), "gantools.restoration.inversion:invert"),
    (("eval",), "gantools.metrics:evaluate"), (("encoder", "train"), "gantools.restoration.encoder:train_encoder"),
    (("classifier", "train"), "gantools.classifier:train_classifier"),
    (("classifier", "eval"), "gantools.classifier:evaluate_classifier"),
    (("segmenter", "train"), "gantools.segmenters:train_segmenter"),
    (("data", "scenes"), "gantools.scenes:write_scenes"),
])
def test_option_defaults_are_the_librarys(path, function) -> None:
    """An option named like a library parameter defaults to that parameter's default (where the CLI
    cannot read it without importing torch, this test keeps the two in step)."""
    import importlib
    import inspect

    module, name = function.split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    command = dict(_all_commands())[path]
    compared = 0
    for param in command.params:
        if param.name not in signature.parameters or param.default is None:
            continue
        expected = signature.parameters[param.name].default
        if expected is inspect.Parameter.empty or expected is None:
            continue
        default = getattr(param.default, "value", param.default)
        if isinstance(expected, tuple):
            default = tuple(int(v) for v in str(default).split(","))
        assert default == expected, f"{' '.join(path)} --{param.name}: {default!r} != {name}'s {expected!r}"
        compared += 1
    assert compared >= 2, path


@pytest.mark.parametrize("path, function, defaults", [
    (("dissect",), "gantools.dissection:dissect", "DISSECT"),
    (("invert",), "gantools.restoration.inversion:invert", "INVERT"),
    (("encoder", "train"), "gantools.restoration.encoder:train_encoder", "ENCODER_TRAIN"),
    (("eval",), "gantools.metrics:evaluate", "EVALUATE"),
    (("classifier", "train"), "gantools.classifier:train_classifier", "CLASSIFIER_TRAIN"),
    (("classifier", "eval"), "gantools.classifier:evaluate_classifier", "CLASSIFIER_EVAL"),
])
def test_defaults_are_stated_once_in_gantools_defaults(path, function, defaults) -> None:
    """These commands and their library functions both take their defaults from one object of the
    torch-free gantools.defaults: every field is a parameter of the function with that default, and
    every option named like a field (or the shown default of an option that is None until given) is it."""
    import dataclasses
    import importlib
    import inspect

    import gantools.defaults

    values = dataclasses.asdict(getattr(gantools.defaults, defaults))
    module, name = function.split(":")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    names = {"strip": "top_k"}  # options spelled otherwise than their parameter
    in_function = {f: signature.parameters[f].default for f in values if f in signature.parameters}
    if name == "train_encoder":  # holdout is encoder_dataset's, which the command calls first
        in_function["holdout"] = inspect.signature(importlib.import_module(module).encoder_dataset).parameters[
            "holdout"].default
    assert in_function == values, f"{name}'s defaults are not {defaults}'s"
    compared = 0
    for param in dict(_all_commands())[path].params:
        field = names.get(param.name, param.name)
        if field not in values:
            continue
        default = getattr(param.default, "value", param.default)
        if default is None:  # None until given: the help shows the default, at the end of its text
            shown = str(param.show_default)
            assert re.search(rf"(^| ){re.escape(str(values[field]))}$", shown), (path, param.name, shown)
        else:
            assert default == values[field], f"{' '.join(path)} --{param.name}: {default!r} != {defaults}.{field}"
        compared += 1
    assert compared >= 2, path


def test_reporter_is_silent_beside_rank_0(monkeypatch, capsys) -> None:
    from gantools.cli.common import Reporter
    from gantools.utils import Progress

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with Reporter(quiet=True) as rep:
        rep(Progress("work", 1, 1, {}, "a notice"))
        rep.print("a line")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with Reporter(quiet=True) as rep:
        rep(Progress("work", 1, 1, {}, "a notice"))
    assert "a notice" in capsys.readouterr().err


def test_model_and_device_options_default_to_gantools_defaults() -> None:
    """Every command's --model (where it has a default) and --device come from gantools.defaults."""
    import gantools.defaults

    seen = {"model": 0, "device": 0}
    for path, command in _all_commands():
        for param in command.params:
            if param.name == "device":
                assert param.default == gantools.defaults.DEVICE, path
                seen["device"] += 1
            elif param.name == "model" and isinstance(param.default, str):
                assert param.default == gantools.defaults.MODEL, path
                seen["model"] += 1
    assert seen["model"] >= 8 and seen["device"] >= 10, seen
