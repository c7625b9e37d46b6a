"""libcore's C extension, built at install time with cffi (everything else is in pyproject.toml)."""

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError


class BuildLibcore(build_ext):
    """A failed compile says what to install, instead of a compiler's traceback (and never falls back silently:
    dedupe needs the C code)."""

    def run(self):
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, PlatformError) as exc:
            raise SystemExit(
                f"error: building libcore (the C part of assistant) failed: {exc}\n"
                "  It needs a C compiler: Debian/Ubuntu `sudo apt-get install gcc python3-dev`, Fedora "
                "`sudo dnf install gcc python3-devel`, macOS `xcode-select --install`; then `make install` again."
            ) from None


setup(cffi_modules=["libcore/_build.py:ffibuilder"], cmdclass={"build_ext": BuildLibcore})
