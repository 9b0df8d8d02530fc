"""Sphinx configuration of the pacnp documentation (``make docs``).

Builds offline: no intersphinx, no remote images, the theme's assets are vendored in its wheel.
"""

import os
import sys
import time

# The package documented is the checkout's, not an installed copy (the Makefile installs it
# editable anyway; this keeps `sphinx-build docs docs/_build` working from a bare venv).
sys.path.insert(0, os.path.abspath(".."))
# Matplotlib without a display, and numba kernels on both cores while the gallery runs.
os.environ.setdefault("MPLBACKEND", "Agg")

import pacnp  # noqa: E402

project = "pacnp"
author = "the pacnp developers"
copyright = f"{time.strftime('%Y')}, {author}"
version = release = pacnp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "examples",
    "**/*.codeobj.json",
    "sg_execution_times.rst",
]

# ---- API reference: one page per function/class, from the numpydoc docstrings.
# The module pages are written here from each module's __all__, so that every public function
# and class is documented without a second list to keep in step.
API_MODULES = {
    "pacnp": "The PAC functions: the adapting kernel, convolution, transposed convolution and "
    "pooling, forward and backward, two-step and fused.",
    "pacnp.filters": "Image filters on the fused PAC ops: (joint) bilateral filtering, joint "
    "bilateral upsampling, detail-preserving pooling, and their plans.",
    "pacnp.crf": "Mean-field CRF inference whose messages are PAC convolutions (the paper's "
    "Sec. 5), and DenseCRF-style refinement of a segmentation.",
    "pacnp.torch": "PyTorch custom ops, the layers of the 2019 reference code, checkpoints, "
    "and the CRF modules.",
    "pacnp.jax": "JAX functions (``jax.custom_vjp``) that run pacnp under ``jit``, ``grad`` "
    "and ``vmap``.",
    "pacnp.dask": "The filters, fused ops and CRF on Dask arrays (images larger than memory).",
}


def _write_api_pages(srcdir):
    import importlib
    import inspect

    here = os.path.join(srcdir, "api")
    os.makedirs(here, exist_ok=True)
    index = [
        "API reference",
        "=============",
        "",
        "Every public function and class, one page each, from its numpydoc docstring.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    for name, blurb in API_MODULES.items():
        mod = importlib.import_module(name)
        funcs = [n for n in mod.__all__ if inspect.isfunction(getattr(mod, n))]
        classes = [n for n in mod.__all__ if inspect.isclass(getattr(mod, n))]
        data = [n for n in mod.__all__ if n not in funcs and n not in classes]
        # .. module:: (not automodule): the module docstrings are notes for maintainers
        page = [
            f"``{name}``",
            "=" * (len(name) + 4),
            "",
            f".. module:: {name}",
            "",
            f".. currentmodule:: {name}",
            "",
            blurb,
            "",
        ]
        for title, names, tmpl in (("Functions", funcs, "function"), ("Classes", classes, "class")):
            if names:
                page += [
                    title,
                    "-" * len(title),
                    "",
                    ".. autosummary::",
                    "   :toctree: generated",
                    f"   :template: {tmpl}.rst",
                    "",
                ]
                page += [f"   {n}" for n in names] + [""]
        if data:
            page += ["Constants", "---------", ""]
            page += [f"``{name}.{n}`` = ``{getattr(mod, n)!r}``" + "\n" for n in data]
        fname = name.replace(".", "_") if name != "pacnp" else "pacnp_core"
        text = "\n".join(page) + "\n"
        path = os.path.join(here, fname + ".rst")
        # rewrite only on change: Sphinx would otherwise re-read every page each build
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
        index.append(f"   {fname}")
    text = "\n".join(index) + "\n"
    path = os.path.join(here, "index.rst")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


# at import, before Sphinx lists the source files (autosummary generates stubs for those)
_write_api_pages(os.path.dirname(os.path.abspath(__file__)))


templates_path = ["_templates"]
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
# numpydoc's class-member tables would need a stub page per torch.nn.Module method
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# the Examples sections are doctests (make test); render them as code, do not plot them
numpydoc_use_plots = False

# ---- Markdown pages (the user guide): heading anchors for [text](#anchor) links
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

# ---- gallery: every docs/examples/plot_*.py runs in `make docs`
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "capture_repr": (),
}

# ---- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"pacnp {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_sidebars = {"index": [], "install": [], "performance": []}
html_show_sourcelink = False
