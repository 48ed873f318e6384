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
ANOMALIB = str(Path(sys.executable).with_name("anomalib"))
"""The ``anomalib`` command of the environment running the tests (not whichever comes first on ``PATH``)."""


def run_python(
    code: str,
    env_extra: dict[str, str] | None = None,
    *args: str,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment (in ``cwd``, default the temp folder)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("ANOMALIB_DISABLE_PLUGIN_AUTOLOAD", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        cwd=cwd or tempfile.gettempdir(),  # not the repository: imports must come from the installed package
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def with_python_path(folder: Path) -> str:
    """``PYTHONPATH`` with ``folder`` first, keeping the caller's entries (a work tree under test)."""
    return os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH", "")]))


def last_json(process: subprocess.CompletedProcess) -> dict:
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fake_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a third-party plugin distribution with one good and one broken entry point."""
    root = tmp_path_factory.mktemp("site") / "site-packages"  # a site folder: only those count as installed
    root.mkdir()
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
    write_distribution(
        root,
        "fake_surface_plugin",
        "[anomalib.models]\n"
        "FakeSurfaceModel = fake_surface_plugin:FakeSurfaceModel\n"
        "Broken = fake_surface_plugin_missing:Broken\n",
    )
    return root


def write_distribution(folder: Path, name: str, entry_points_text: str) -> None:
    """A ``<name>-0.1.dist-info`` metadata folder in ``folder`` declaring ``entry_points_text``."""
    dist_info = folder / f"{name}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(entry_points_text)


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
        [ANOMALIB, "fit", "--model", written, "--data", "mvtec_ad", "--print_config"],
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


def test_cli_fixes_stay_out_when_internals_change() -> None:
    """A CLI without ``AnomalibCLI.__init__(self, args, ...)`` is left untouched by both CLI fixes."""
    result = last_json(
        run_python(
            """
            import json, sys, types
            from anomalib_surface.compat import cli_build_errors, cli_class_names

            class AnomalibCLI:
                def __init__(self, parser_kwargs=None): ...

            fake = types.ModuleType("anomalib.cli.cli")
            fake.AnomalibCLI = AnomalibCLI
            sys.modules["anomalib.cli.cli"] = fake
            print(json.dumps({"applies": [cli_class_names.applies(), cli_build_errors.applies()]}))
            """,
        ),
    )
    assert result == {"applies": [False, False]}


def test_failing_fix_warns_once_naming_the_version_and_spares_anomalib() -> None:
    """A compatibility fix that raises becomes one CompatWarning naming anomalib's version; anomalib keeps working."""
    process = run_python(
        """
        import json, sys, types, warnings
        import anomalib
        from anomalib_surface import compat

        broken = types.ModuleType("anomalib_surface.compat.broken_probe")
        broken.applies = lambda: 1 / 0
        sys.modules[broken.__name__] = broken
        compat.FIXES["anomalib.fake"] = ("broken_probe",)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            installed = [compat.apply_fixes("anomalib.fake"), compat.apply_fixes("anomalib.fake")]
        from anomalib.models import get_model
        print(json.dumps({"installed": installed, "version": anomalib.__version__,
                          "warnings": [str(w.message) for w in caught if w.category is compat.CompatWarning],
                          "padim": type(get_model("padim", pre_trained=False)).__name__}))
        """,
    )
    result = last_json(process)
    assert result["installed"] == [[], []]
    assert result["padim"] == "Padim"
    assert len(result["warnings"]) == 1
    assert f"anomalib {result['version']}" in result["warnings"][0]
    assert "broken_probe" in result["warnings"][0]


def test_untested_anomalib_version_warns_once_and_still_registers() -> None:
    """A newer anomalib than the tested ones: one warning naming it, plugins and built-ins still work."""
    process = run_python(
        """
        import json, warnings
        warnings.simplefilter("always")
        import anomalib
        anomalib.__version__ = "2.99.0"
        from anomalib.models import get_model, list_models
        print(json.dumps({"clgan": "Clgan" in list_models(case="pascal"),
                          "padim": type(get_model("padim", pre_trained=False)).__name__}))
        """,
    )
    assert last_json(process) == {"clgan": True, "padim": "Padim"}
    assert process.stderr.count("anomalib-surface with anomalib 2.99.0: this anomalib version was not tested") == 1


def test_broken_third_party_entry_point_is_skipped_with_warning(fake_plugins: Path) -> None:
    process = run_python(
        """
        import json
        from anomalib.models import get_model, list_models
        print(json.dumps({"fake": "FakeSurfaceModel" in list_models(case="pascal"),
                          "padim": type(get_model("padim", pre_trained=False)).__name__}))
        """,
        {"PYTHONPATH": with_python_path(fake_plugins)},
    )
    assert last_json(process) == {"fake": True, "padim": "Padim"}
    assert "Broken = fake_surface_plugin_missing:Broken" in process.stderr
    assert "fake-surface-plugin" in process.stderr
    cli = subprocess.run(
        [ANOMALIB, "fit", "--model", "padim", "--data", "MVTecAD", "--print_config"],
        env={**os.environ, "PYTHONPATH": with_python_path(fake_plugins), "HF_HUB_OFFLINE": "1"},
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
    site_dir = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        assert {"anomalib_surface_autoload.pth", "anomalib_surface_autoload.start"} <= set(archive.namelist())
        archive.extractall(site_dir)
    venv_sites = [p for p in sys.path if p.endswith("site-packages")]
    # -S: no automatic site processing, so the editable install's .pth files stay out of the way.
    result = last_json(
        run_python(
            f"""
            import json, site, sys
            sys.path.extend({venv_sites!r})
            site.addsitedir({str(site_dir)!r})
            import anomalib.models
            print(json.dumps({{"origin": anomalib.models.Clgan.__module__.split(".")[0],
                               "file": sys.modules["anomalib_surface"].__file__}}))
            """,
            {"PYTHONPATH": ""},
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


def test_distribution_planted_in_the_working_directory_is_never_loaded(tmp_path: Path) -> None:
    """A ``*.dist-info`` in the current directory (``""``/``"."`` on ``sys.path``) runs no code on ``import anomalib``."""
    marker = tmp_path / "planted_ran"
    (tmp_path / "planted_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Planted: ...\n")
    write_distribution(
        tmp_path,
        "planted_plugin",
        "[anomalib.models]\nPlanted = planted_plugin:Planted\n[anomalib.data]\nPlantedData = planted_plugin:Planted\n",
    )
    process = run_python(
        """
        import json, sys
        sys.path.insert(0, ".")
        import anomalib.models, anomalib.data
        print(json.dumps({"clgan": hasattr(anomalib.models, "Clgan"), "planted": "planted_plugin" in sys.modules}))
        """,
        cwd=tmp_path,
    )
    assert last_json(process) == {"clgan": True, "planted": False}
    assert not marker.exists()
    assert "planted" not in process.stderr.lower()


SUBMODULES = sorted(
    ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (REPO_ROOT / "anomalib_surface").rglob("*.py")
)
FIRST_IMPORTS_BY_DEFAULT = {
    "anomalib_surface.components",
    "anomalib_surface.data",
    "anomalib_surface.metrics",
    "anomalib_surface.models.clgan.torch_model",
    "anomalib_surface.post_processing",
}
"""One interpreter with torch per module: these run by default (each imports anomalib from a different layer), the
others are marked slow."""


@pytest.mark.parametrize(
    "first",
    [name if name in FIRST_IMPORTS_BY_DEFAULT else pytest.param(name, marks=pytest.mark.slow) for name in SUBMODULES],
)
def test_registration_does_not_depend_on_which_module_is_imported_first(first: str) -> None:
    """Import one ``anomalib_surface`` module first, in a fresh interpreter, then find all five models by name.

    Five run by default (:data:`FIRST_IMPORTS_BY_DEFAULT`), all with ``-m slow``.
    """
    result = last_json(
        run_python(
            f"""
            import json
            import {first}
            import anomalib.models
            from anomalib.models import get_model, list_models
            found = {{}}
            for name in {PLUGIN_MODELS!r}:
                init_args = getattr(anomalib.models, name).smoke_test_init_args()
                found[name] = type(get_model(name.lower(), **init_args)).__name__
            print(json.dumps({{"found": found, "listed": sorted(set({PLUGIN_MODELS!r}) & list_models(case="pascal"))}}))
            """,
        ),
    )
    assert result == {"found": {name: name for name in PLUGIN_MODELS}, "listed": PLUGIN_MODELS}


def run_with_repo_start_up_file(tmp_path: Path, code: str, python_path: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` after site processing of a folder holding only this repository's ``.pth`` (no site-packages)."""
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    (site_dir / "anomalib_surface_autoload.pth").write_bytes(
        (REPO_ROOT / "anomalib_surface" / "anomalib_surface_autoload.pth").read_bytes(),
    )
    return run_python(
        f"import site\nsite.addsitedir({str(site_dir)!r})\n" + textwrap.dedent(code),
        {"PYTHONPATH": python_path, **env},
        "-S",  # no automatic site processing: the venv's installed .pth files stay out of the way
    )


IMPORTED = """
import json, sys
print(json.dumps(sorted(m for m in sys.modules if m.startswith("anomalib_surface"))))
"""


def test_environment_variable_means_no_import_at_all(tmp_path: Path) -> None:
    """With the switch set, the start-up file imports nothing, not even this package; without it, only the hook (the watched modules are read at the first anomalib import)."""
    switched_off = run_with_repo_start_up_file(tmp_path, IMPORTED, str(REPO_ROOT), ANOMALIB_DISABLE_PLUGIN_AUTOLOAD="1")
    assert last_json(switched_off) == []
    (tmp_path / "site-packages" / "anomalib_surface_autoload.pth").unlink()
    (tmp_path / "site-packages").rmdir()
    switched_on = run_with_repo_start_up_file(tmp_path, IMPORTED, str(REPO_ROOT))
    assert last_json(switched_on) == ["anomalib_surface", "anomalib_surface._autoload"]


def test_start_up_file_left_behind_by_a_broken_uninstall_is_silent(tmp_path: Path) -> None:
    """The ``.pth`` without its package (removed by hand, half-finished uninstall) prints nothing and fails nothing."""
    process = run_with_repo_start_up_file(tmp_path, IMPORTED, "")
    assert (process.returncode, process.stdout.strip(), process.stderr) == (0, "[]", "")


def test_start_file_names_the_hook_for_python_3_15() -> None:
    """PEP 829: ``<name>.start`` beside ``<name>.pth`` holds ``pkg.mod:callable`` lines that site calls without args."""
    start_file = REPO_ROOT / "anomalib_surface" / "anomalib_surface_autoload.start"
    lines = [line for line in start_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines == ["anomalib_surface._autoload:install"]
    result = last_json(
        run_python(
            f"""
            import json, pkgutil, sys
            pkgutil.resolve_name({lines[0]!r})()
            from anomalib_surface._autoload import AnomalibImportWatcher
            import anomalib.models
            print(json.dumps({{"hooks": sum(isinstance(f, AnomalibImportWatcher) for f in sys.meta_path),
                               "clgan": hasattr(anomalib.models, "Clgan")}}))
            """,
        ),
    )
    assert result == {"hooks": 1, "clgan": True}
