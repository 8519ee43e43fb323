"""Build of the optional C++ extension ``gptfast._C``.

The extension is optional by design (like markupsafe's speedups): when there is
no compiler or the build fails, the package still installs and runs on its
pure-Python reference, and ``import gptfast`` says so once.  Set
``GPTFAST_REQUIRE_EXTENSION=1`` to turn a failed build into an error instead.

Objects are compiled in parallel by ninja when it is available (it is a build
requirement in pyproject.toml) and one by one by setuptools otherwise.

The decoding engine's kernels (csrc/matvec.cpp) use AVX2/FMA/F16C when the
compiler targets them, so a local build adds ``-march=native`` (when the
compiler accepts it; else ``-mcpu=native``, which some ARM compilers take
instead).  Set ``GPTFAST_PORTABLE=1`` to leave it out, e.g. for a
wheel that must run on other machines; the kernels then use their portable
C++ fallback.
"""
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension
except ImportError:  # pybind11 missing: build nothing, run on the reference
    Pybind11Extension = None

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"


def _generated_dir(build_temp: str) -> Path:
    return Path(build_temp).resolve() / "generated"


def _write_unicode_tables(out_dir: Path) -> None:
    """Generate csrc's Unicode class tables from *this* interpreter's `re`,
    so \\w \\d \\s in the C++ scanner mean what Python's `re` means here."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.check_call(
        [sys.executable, str(CSRC / "gen_unicode_tables.py"), str(out_dir / "unicode_tables.h")]
    )


def _ninja_executable():
    exe = shutil.which("ninja")
    if exe:
        return exe
    try:
        import ninja  # the PyPI wheel ships the binary

        return str(Path(ninja.BIN_DIR) / "ninja")
    except ImportError:
        return None


def _accepts(compiler, flag: str) -> bool:
    """Whether the (unix) compiler accepts `flag`."""
    if compiler.compiler_type != "unix":
        return False
    probe = [compiler.compiler_so[0], flag, "-x", "c++", "-c", os.devnull, "-o", os.devnull]
    try:
        return subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


def _native_arch_flags(compiler) -> list:
    """["-march=native"] for a local build with a compiler that accepts it;
    else ["-mcpu=native"] (what some ARM compilers take instead); else []."""
    if os.environ.get("GPTFAST_PORTABLE") == "1":
        return []
    for flag in ("-march=native", "-mcpu=native"):
        if _accepts(compiler, flag):
            return [flag]
    return []


def _openmp_flags(compiler) -> list:
    """["-fopenmp"] where accepted: the CPU attention kernel then runs on
    PyTorch's own OpenMP threads (one libgomp per process) instead of
    competing with them; without it, that kernel runs on one thread."""
    return ["-fopenmp"] if _accepts(compiler, "-fopenmp") else []


class OptionalNinjaBuildExt(build_ext):
    def build_extension(self, ext):
        try:
            openmp = _openmp_flags(self.compiler)
            ext.extra_compile_args = list(ext.extra_compile_args) + _native_arch_flags(self.compiler) + openmp
            ext.extra_link_args = list(ext.extra_link_args) + openmp
            gen = _generated_dir(self.build_temp)
            _write_unicode_tables(gen)
            ext.include_dirs.append(str(gen))
            ninja = _ninja_executable()
            if ninja and self.compiler.compiler_type == "unix":
                self._build_with_ninja(ext, ninja)
            else:
                super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any failure means "no extension"
            if os.environ.get("GPTFAST_REQUIRE_EXTENSION") == "1":
                raise
            print(
                f"WARNING: building gptfast._C failed ({exc}); gptfast will run on its "
                "pure-Python reference.",
                file=sys.stderr,
            )

    def _build_with_ninja(self, ext, ninja: str) -> None:
        """Compile every source with one ninja call (parallel), link with setuptools."""
        obj_dir = Path(self.build_temp).resolve() / "ninja"
        obj_dir.mkdir(parents=True, exist_ok=True)
        cxx = self.compiler.compiler_so  # e.g. ['g++', '-pthread', '-fPIC', ...]
        includes = [sysconfig.get_paths()["include"], *ext.include_dirs]
        cflags = cxx[1:] + [f"-I{d}" for d in includes] + list(ext.extra_compile_args)
        cflags += [f"-D{name}={value}" if value is not None else f"-D{name}" for name, value in ext.define_macros]
        lines = [
            "ninja_required_version = 1.3",
            f"cxx = {cxx[0]}",
            f"cflags = {' '.join(shlex.quote(f) for f in cflags)}",
            "rule compile",
            "  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = CXX $in",
        ]
        objects = []
        for src in ext.sources:
            obj = obj_dir / (Path(src).stem + ".o")
            objects.append(str(obj))
            lines.append(f"build {obj}: compile {Path(src).resolve()}")
        (obj_dir / "build.ninja").write_text("\n".join(lines) + "\n")
        subprocess.check_call([ninja, "-C", str(obj_dir)])
        self.compiler.link_shared_object(
            objects,
            self.get_ext_fullpath(ext.name),
            libraries=self.get_libraries(ext),
            library_dirs=ext.library_dirs,
            extra_postargs=list(ext.extra_link_args),
            target_lang="c++",
        )


ext_modules = []
if Pybind11Extension is not None and os.environ.get("GPTFAST_NO_EXTENSION") != "1":
    ext_modules.append(
        Pybind11Extension(
            "gptfast._C",
            sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("*.cpp")),
            include_dirs=[str(CSRC)],
            cxx_std=17,
            extra_compile_args=["-O3", "-fvisibility=hidden"],
            extra_link_args=["-pthread"],
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalNinjaBuildExt})
