"""Entry-point registration as users meet it: fresh processes, no ``import anomalib_surface``.

Every check runs in a subprocess so that the start-up ``.pth`` hook is what makes the plugins
visible. A throw-away distribution on ``PYTHONPATH`` plays a third-party plugin (good and broken).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

PLUGIN_MODELS = sorted(ep.name for ep in entry_points(group="anomalib.models") if ep.value.startswith("anomalib_surface."))
PLUGIN_DATA = sorted(ep.name for ep in entry_points(group="anomalib.data") if ep.value.startswith("anomalib_surface."))
REPO_ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, env_extra: dict[str, str] | None = None, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment and return the finished process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("ANOMALIB_DISABLE_PLUGIN_AUTOLOAD", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        cwd=tempfile.gettempdir(),  # not the repository: imports must come from the installed package
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def last_json(process: subprocess.CompletedProcess) -> dict:
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fake_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a third-party plugin distribution with one good and one broken entry point."""
    root = tmp_path_factory.mktemp("site")
    (root / "fake_surface_plugin.py").write_text(
        textwrap.dedent(
            """
            from anomalib.models.components import AnomalibModule

            class FakeSurfaceModel(AnomalibModule):
                def training_step(self, batch, *args, **kwargs): ...
                def learning_type(self): ...
                def trainer_arguments(self): return {}
            """,
        ),
    )
    dist_info = root / "fake_surface_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-surface-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[anomalib.models]\n"
        "FakeSurfaceModel = fake_surface_plugin:FakeSurfaceModel\n"
        "Broken = fake_surface_plugin_missing:Broken\n",
    )
    return root


def test_plugin_declares_models_and_datamodules() -> None:
    assert "Clgan" in PLUGIN_MODELS
    assert "SurfaceDemo" in PLUGIN_DATA


def test_start_up_hook_imports_no_torch() -> None:
    result = last_json(
        run_python(
            """
            import json, sys
            from anomalib_surface._autoload import AnomalibImportWatcher
            print(json.dumps({
                "heavy": sorted(m for m in ("torch", "anomalib", "lightning", "timm") if m in sys.modules),
                "hook": any(isinstance(f, AnomalibImportWatcher) for f in sys.meta_path),
            }))
            """,
        ),
    )
    assert result == {"heavy": [], "hook": True}


def test_get_model_and_list_models_find_plugins_without_import() -> None:
    result = last_json(
        run_python(
            f"""
            import json
            import anomalib.models
            from anomalib.models import get_model, list_models
            names = {PLUGIN_MODELS!r}
            found = {{}}
            for name in names:
                model_class = getattr(anomalib.models, name)
                init_args = model_class.smoke_test_init_args()
                models = [
                    get_model(name.lower(), **init_args),
                    get_model({{"class_path": name, "init_args": init_args}}),
                    get_model({{"class_path": model_class.__module__ + "." + name, "init_args": init_args}}),
                ]
                found[name] = [type(model).__name__ for model in models]
            print(json.dumps({{"found": found, "listed": sorted(set(names) & list_models(case="pascal"))}}))
            """,
        ),
    )
    assert result["found"] == {name: [name, name, name] for name in PLUGIN_MODELS}
    assert result["listed"] == PLUGIN_MODELS


def test_get_datamodule_finds_plugin_datamodules() -> None:
    result = last_json(
        run_python(
            """
            import json
            import anomalib.data
            print(json.dumps({"classes": sorted(n for n in %r if hasattr(anomalib.data, n))}))
            """
            % PLUGIN_DATA,
        ),
    )
    assert result["classes"] == PLUGIN_DATA


def test_plugin_imported_before_anomalib_is_still_registered() -> None:
    result = last_json(
        run_python(
            """
            import json
            from anomalib_surface.data import SurfaceDemo
            from anomalib_surface.models.clgan import Clgan
            import anomalib.data, anomalib.models
            from anomalib.data import get_datamodule
            from anomalib.models import get_model
            print(json.dumps({
                "data": anomalib.data.SurfaceDemo is SurfaceDemo,
                "datamodule": type(get_datamodule({"class_path": "SurfaceDemo", "init_args": {"image_size": 64}})).__name__,
                "model": type(get_model({"class_path": "Clgan", "init_args": Clgan.smoke_test_init_args()})).__name__,
            }))
            """,
        ),
    )
    assert result == {"data": True, "datamodule": "SurfaceDemo", "model": "Clgan"}


@pytest.mark.parametrize("written", ["padim", "Padim", "efficient_ad", "clgan", "Clgan"])
def test_cli_accepts_model_names_in_any_case(written: str) -> None:
    process = subprocess.run(
        ["anomalib", "fit", "--model", written, "--data", "mvtec_ad", "--print_config"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    expected = {"padim": "Padim", "efficient_ad": "EfficientAd", "clgan": "Clgan"}[written.lower()]
    assert f".{expected}\n" in process.stdout
    assert "anomalib.data.MVTecAD" in process.stdout or ".MVTecAD\n" in process.stdout


def test_cli_patch_degrades_with_warning_when_internals_change() -> None:
    result = last_json(
        run_python(
            """
            import json, types, warnings
            from anomalib_surface.registration import CliPatchWarning, patch_cli_names

            class AnomalibCLI:
                def __init__(self, parser_kwargs=None): ...

            fake = types.ModuleType("fake_cli")
            fake.AnomalibCLI = AnomalibCLI
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                patched = patch_cli_names(fake)
            print(json.dumps({"patched": patched, "warned": any(w.category is CliPatchWarning for w in caught),
                              "untouched": AnomalibCLI.__init__.__name__ == "__init__"
                              and not hasattr(AnomalibCLI.__init__, "_anomalib_surface_patched")}))
            """,
        ),
    )
    assert result == {"patched": False, "warned": True, "untouched": True}


def test_broken_third_party_entry_point_is_skipped_with_warning(fake_plugins: Path) -> None:
    process = run_python(
        """
        import json
        from anomalib.models import get_model, list_models
        print(json.dumps({"fake": "FakeSurfaceModel" in list_models(case="pascal"),
                          "padim": type(get_model("padim", pre_trained=False)).__name__}))
        """,
        {"PYTHONPATH": str(fake_plugins)},
    )
    assert last_json(process) == {"fake": True, "padim": "Padim"}
    assert "Broken = fake_surface_plugin_missing:Broken" in process.stderr
    assert "fake-surface-plugin" in process.stderr
    cli = subprocess.run(
        ["anomalib", "fit", "--model", "padim", "--data", "MVTecAD", "--print_config"],
        env={**os.environ, "PYTHONPATH": str(fake_plugins), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]


def test_environment_variable_switches_the_hook_off() -> None:
    result = last_json(
        run_python(
            """
            import json, sys
            import anomalib.models, anomalib.data
            print(json.dumps({"models": hasattr(anomalib.models, "Clgan"), "data": hasattr(anomalib.data, "SurfaceDemo"),
                              "surface_imported": any(m.startswith("anomalib_surface.models") for m in sys.modules)}))
            """,
            {"ANOMALIB_DISABLE_PLUGIN_AUTOLOAD": "1"},
        ),
    )
    assert result == {"models": False, "data": False, "surface_imported": False}


def test_regular_wheel_install_runs_the_hook(tmp_path: Path) -> None:
    """Build the real wheel, unpack it as a site directory and check the hook works from there."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("anomalib_surface-*.whl")
    site_dir = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert "anomalib_surface_autoload.pth" in archive.namelist()
        archive.extractall(site_dir)
    venv_site = next(p for p in sys.path if p.endswith("site-packages"))
    # -S: no automatic site processing, so the editable install's .pth files stay out of the way.
    result = last_json(
        run_python(
            f"""
            import json, site, sys
            sys.path.append({venv_site!r})
            site.addsitedir({str(site_dir)!r})
            import anomalib.models
            print(json.dumps({{"origin": anomalib.models.Clgan.__module__.split(".")[0],
                               "file": sys.modules["anomalib_surface"].__file__}}))
            """,
            None,
            "-S",
        ),
    )
    assert result["file"].startswith(str(site_dir))


def test_benchmark_collects_jobs_with_different_model_options() -> None:
    """``anomalib benchmark`` aggregates a grid whose models have different init_args (anomalib 2.7 raised KeyError)."""
    result = last_json(
        run_python(
            """
            import json, math
            from anomalib.pipelines.benchmark.job import BenchmarkJob

            frame = BenchmarkJob.collect([
                {"seed": 0, "model.class_path": "Padim", "model.init_args.n_features": 100, "image_AUROC": 0.8},
                {"seed": 0, "model.class_path": "Clgan", "model.init_args.ngf": 8, "image_AUROC": 0.7},
            ])
            print(json.dumps({
                "columns": sorted(frame.columns),
                "rows": len(frame),
                "missing": math.isnan(frame.loc[1, "model.init_args.n_features"]),
                "auroc": frame["image_AUROC"].tolist(),
            }))
            """,
        ),
    )
    assert result["rows"] == 2
    assert result["columns"] == sorted(
        ["seed", "model.class_path", "model.init_args.n_features", "model.init_args.ngf", "image_AUROC"],
    )
    assert result["missing"]
    assert result["auroc"] == [0.8, 0.7]
