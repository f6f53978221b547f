"""Build the Cython kernels in csrc/groupinf against SciPy's BLAS/LAPACK.

BLAS and LAPACK come through scipy.linalg.cython_blas / cython_lapack, so
nothing is linked here: the kernels call SciPy's function pointers.
"""

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["_loss", "_hessian", "_linalg", "_groupsum"]

extensions = [
    Extension(
        f"groupinf.{name}",
        [f"csrc/groupinf/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
