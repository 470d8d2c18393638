"""llama.cpp's own tools for the GGUF export: its Hugging Face -> GGUF converter and quantizer.

The converter (convert_hf_to_gguf.py, its `conversion` package and the gguf-py it imports) is
taken from the llama-cpp-python source distribution on PyPI, pinned to LLAMA_CPP_PYTHON: the
converter and the llama.cpp that loads the file come from the same release. It is downloaded
once per project into models/tools/ and run with this Python (it needs torch, transformers,
numpy and sentencepiece, all installed with OpenSEM). f16 and q8_0 are written by the converter
itself; q4_k_m is quantized from the f16 file by llama.cpp's quantizer, which only a built
llama-cpp-python has (`make setup-llama`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from opensem.errors import OpenSEMError

LLAMA_CPP_PYTHON = "0.3.36"
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
CONVERTER_TYPES = ("f16", "q8_0")  # written by the converter; the others are quantized from f16
QUANTIZED_TYPES = {"q4_k_m": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_K_M
QUANTS = (*CONVERTER_TYPES, *QUANTIZED_TYPES)


def converter(tools_dir: Path) -> Path:
    """convert_hf_to_gguf.py of the pinned release, fetched into tools_dir once (a download of
    about 75 MB; written whole or not at all)."""
    home = tools_dir / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    script = home / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    tools_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tools_dir) as tmp:
        sdist = _download_sdist(Path(tmp))
        unpacked = Path(tmp) / "unpacked"
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers()
                       if m.name.startswith(prefix) and m.name[len(prefix):].startswith(CONVERTER_PARTS)]
            archive.extractall(unpacked, members=members, filter="data")
        shutil.rmtree(home, ignore_errors=True)
        (unpacked / prefix).rename(home)
    return script


def _download_sdist(into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--dest", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        raise OpenSEMError(f"cannot download llama.cpp's converter (the llama-cpp-python {LLAMA_CPP_PYTHON} source "
                           f"distribution) from the package index: {(done.stderr or 'no file').strip().splitlines()[-1]}; "
                           f"on a machine without it, copy models/tools/llama.cpp-{LLAMA_CPP_PYTHON}/ from one that has it")
    return found[0]


def convert(script: Path, model_dir: Path, outfile: Path, outtype: str) -> None:
    """model_dir (a Hugging Face folder) -> outfile, in f16 or q8_0."""
    command = [sys.executable, str(script), str(model_dir), "--outfile", str(outfile), "--outtype", outtype]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if done.returncode != 0 or not outfile.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        raise OpenSEMError(f"llama.cpp's converter could not convert this model: {tail}")


def llama_python() -> Path | None:
    """A Python with a built llama-cpp-python: this one, $LLAMA_CPP_PYTHON, or the project's
    .venv-llama (make setup-llama); None when there is none."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        return Path(sys.executable)
    from opensem.workspace import project_root

    for candidate in (os.environ.get("LLAMA_CPP_PYTHON"), project_root() / ".venv-llama" / "bin" / "python"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def quantize(f16: Path, outfile: Path, quant: str) -> None:
    """f16 GGUF -> outfile in `quant`, with llama.cpp's quantizer (llama_model_quantize)."""
    python = llama_python()
    if python is None:
        raise OpenSEMError(f"--quant {quant} needs llama.cpp's quantizer, which comes with a built llama-cpp-python: "
                           f"`make setup-llama` (or pip install llama-cpp-python=={LLAMA_CPP_PYTHON}), or use --quant q8_0")
    code = ("import ctypes, sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            "p.ftype = int(sys.argv[3])\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n")
    done = subprocess.run([str(python), "-c", code, str(f16), str(outfile), str(QUANTIZED_TYPES[quant])], capture_output=True, text=True)
    if done.returncode != 0 or not outfile.is_file():
        raise OpenSEMError(f"llama.cpp's quantizer failed ({quant}): {done.stderr.strip().splitlines()[-1:] or done.returncode}")
