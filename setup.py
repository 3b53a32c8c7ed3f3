"""The compiled part of the package: gru4rec.network._kernels, the fused CPU loops of training.

Also the package list: `gru4rec` and its subpackages, found in `gru4rec/`, and
`gru4rec.pipelines`, whose sources are the top-level `pipelines/` folder (the Polars ETL
sits at the top of the repository; it installs under the one import name `gru4rec`).
Everything else is in pyproject.toml. A plain setuptools extension is enough (the loops
are C without torch or Python headers, so no torch at build time and no CMake); it is
built with -fopenmp where the compiler has it, so the loops share torch's OpenMP threads,
and serially otherwise. The extension is optional: where it cannot be built the package
still installs, and training says once that it runs on the slower torch loops.
"""

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# No -march: the instruction set is chosen per source (kernels_<isa>.c) and at run time.
_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c11"]
_OPENMP = ["-fopenmp"]


class BuildKernels(build_ext):
    """build_ext that tries OpenMP first and falls back to serial loops."""

    def build_extension(self, ext: Extension) -> None:
        try:
            ext.extra_compile_args = [*_FLAGS, *_OPENMP]
            ext.extra_link_args = list(_OPENMP)
            super().build_extension(ext)
        except Exception as error:
            self.warn(f"building {ext.name} with OpenMP failed ({error}); building it serially")
            ext.extra_compile_args = [*_FLAGS, "-fopenmp-simd"]
            ext.extra_link_args = []
            super().build_extension(ext)


setup(
    packages=[*find_packages(include=["gru4rec", "gru4rec.*"]), "gru4rec.pipelines"],
    package_dir={"gru4rec.pipelines": "pipelines"},
    # The C sources go in the sdist (MANIFEST.in), not the wheel: it carries the built loops.
    include_package_data=False,
    package_data={"gru4rec": ["py.typed"]},
    ext_modules=[
        Extension(
            "gru4rec.network._kernels",
            sources=[
                "gru4rec/network/csrc/module.c",
                "gru4rec/network/csrc/kernels_base.c",
                "gru4rec/network/csrc/kernels_avx2.c",
                "gru4rec/network/csrc/kernels_avx512.c",
            ],
            depends=["gru4rec/network/csrc/kernels.inc"],
            libraries=["m"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildKernels},
)
