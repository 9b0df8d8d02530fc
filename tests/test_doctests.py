"""The Examples sections of the public docstrings, run as doctests.

Every public function and class of the documented modules (their ``__all__``) is collected
here by name, not by file, so the doctests follow a function wherever it is defined (the array
contract's ``delegate`` wraps the public functions, which hides them from
``pytest --doctest-modules``'s finder). The examples use tiny arrays and print shapes, dtypes
and rounded numbers, so they are deterministic and quick once numba's cache is warm.
"""

import doctest
import importlib
import inspect

import pytest

MODULES = ("pacnp", "pacnp.filters", "pacnp.crf", "pacnp.torch", "pacnp.jax", "pacnp.dask")
# the libraries an adapter module needs; without them its doctests are skipped
NEEDS = {"pacnp.torch": "torch", "pacnp.jax": "jax", "pacnp.dask": "dask.array"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public(modname):
    if modname in NEEDS:
        try:
            importlib.import_module(NEEDS[modname])
        except ImportError:
            return []
    mod = importlib.import_module(modname)
    return [
        (modname, name)
        for name in mod.__all__
        if inspect.isfunction(getattr(mod, name)) or inspect.isclass(getattr(mod, name))
    ]


CASES = [case for modname in MODULES for case in _public(modname)]


def _doctests(obj, qualname):
    # module=False: the object is taken as given (a wrapper's module is not the package's);
    # a class is searched with its own methods (its __dict__), not the inherited ones
    finder = doctest.DocTestFinder(recurse=inspect.isclass(obj), exclude_empty=True)
    obj = inspect.unwrap(obj) if inspect.isfunction(obj) else obj
    return [t for t in finder.find(obj, qualname, module=False, globs={}) if t.examples]


@pytest.mark.parametrize("modname, name", CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_docstring_examples(modname, name):
    obj = getattr(importlib.import_module(modname), name)
    tests = _doctests(obj, f"{modname}.{name}")
    assert tests, f"{modname}.{name} has no Examples section (every public name shows one)"
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)


def test_main_functions_have_examples():
    """The main entry point of every documented module shows how it is called."""
    main = {
        "pacnp": [
            "packernel2d",
            "pacconv2d",
            "pacconv_transpose2d",
            "pacpool2d",
            "pacconv2d_fused",
        ],
        "pacnp.filters": ["bilateral_filter", "joint_bilateral_filter", "joint_bilateral_upsample"],
        "pacnp.crf": ["crf_refine", "paccrf", "PacCRF"],
        "pacnp.torch": ["PacConv2d", "pacconv2d"],
        "pacnp.jax": ["pacconv2d_fused"],
        "pacnp.dask": ["joint_bilateral_filter"],
    }
    missing = []
    for modname, names in main.items():
        if (modname, names[0]) not in CASES:
            continue  # an adapter whose library is not installed
        mod = importlib.import_module(modname)
        missing += [
            f"{modname}.{n}" for n in names if not _doctests(getattr(mod, n), f"{modname}.{n}")
        ]
    assert not missing, f"no Examples section: {missing}"
