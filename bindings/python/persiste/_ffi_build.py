"""cffi builder (API mode, out of line) for the persiste C library.

The declarations are the public header's block between ``/* @cdef-begin */``
and ``/* @cdef-end */`` with ``PERSISTE_API`` removed: one source of truth.

Two uses:
  * pip/setuptools: ``setup(cffi_modules=["persiste/_ffi_build.py:ffibuilder"])``;
    the header, include and library directories come from
    ``pkg-config persiste`` (set PKG_CONFIG_PATH to
    ``<build>/meson-uninstalled`` to build against a meson build tree).
  * meson: ``python3 _ffi_build.py HEADER OUT.c`` writes the C source, which
    meson compiles with ``py.extension_module``.
"""
import os
import re
import shlex
import subprocess
import sys

from cffi import FFI

MODULE = "persiste._persiste_cffi"
SOURCE = "#include <persiste/persiste.h>\n"


def cdef_from_header(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"/\* @cdef-begin \*/(.*?)/\* @cdef-end \*/", text, re.S)
    if m is None:
        raise RuntimeError(f"{path}: no /* @cdef-begin */ ... /* @cdef-end */ block")
    return m.group(1).replace("PERSISTE_API", "")


def make_builder(header, **build_args):
    ffi = FFI()
    ffi.cdef(cdef_from_header(header))
    ffi.set_source(MODULE, SOURCE, **build_args)
    return ffi


def _pkg_config(option):
    try:
        out = subprocess.run(["pkg-config", option, "persiste"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise RuntimeError(
            "pkg-config cannot find persiste (install the C library, or set "
            "PKG_CONFIG_PATH=<meson build dir>/meson-uninstalled): "
            + detail.strip()) from None
    return shlex.split(out)


def builder_from_pkg_config():
    include_dirs = [a[2:] for a in _pkg_config("--cflags-only-I")]
    library_dirs = [a[2:] for a in _pkg_config("--libs-only-L")]
    libraries = [a[2:] for a in _pkg_config("--libs-only-l")]
    cflags = _pkg_config("--cflags-only-other")
    headers = [os.path.join(d, "persiste", "persiste.h")
               for d in include_dirs + ["/usr/local/include", "/usr/include"]]
    header = next((h for h in headers if os.path.exists(h)), None)
    if header is None:
        raise RuntimeError("persiste/persiste.h not found in " + ", ".join(include_dirs))
    return make_builder(header, include_dirs=include_dirs,
                        library_dirs=library_dirs, libraries=libraries,
                        runtime_library_dirs=library_dirs,
                        extra_compile_args=cflags)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: _ffi_build.py HEADER OUT.c")
    make_builder(sys.argv[1]).emit_c_code(sys.argv[2])
else:
    ffibuilder = builder_from_pkg_config()
