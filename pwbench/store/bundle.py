"""Kernel bundles: kernels built on one machine (`pwbench build`) to run on another (`pwbench run
--kernels DIR`), e.g. CUDA kernels built where there is nvcc but no GPU, run where there is a GPU
and only TVM's runtime.

A bundle directory holds
  manifest.json    what was built, for what, with what: the format and its version; `built_for`
                   (the build target's kernel key, e.g. {"arch": "sm_90"}, the CUDA toolkit, and
                   the GPU a tuning database was tuned on, if any), the TVM and tvm_ffi versions
                   and the TVM target, the suite's layers, and one entry per kernel: spec id,
                   backend, variant, library and its SHA-256, device, clock, its row columns
                   (DLight rule, launch configuration, resources, build seconds) and the
                   per-device-function resources;
  <arch>/*.so      the exported libraries (with the CUDA source .cu and the ptxas report beside);
  resources.csv    one row per device function of every kernel (columns in results/README.md).
A bundle runs only where the target accepts its `built_for` (same arch; a driver of its CUDA
major release; the GPU its schedules were tuned on), the TVM runtime has its TVM and tvm_ffi
versions, and every library still has the hash it was built with (a copy cut short or mixed
with another bundle's is refused, in one line).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pwbench import files
from pwbench.errors import UserError
from pwbench.workloads.spec import ConvSpec
from pwbench.workloads.suites import Suite

MANIFEST, RESOURCES = "manifest.json", "resources.csv"
FORMAT, FORMAT_VERSION = "pwbench-kernel-bundle", 1
TEXT_FILES = {"source": ".cu", "ptxas_log": ".ptxas.txt"}  # details kept as files, not in JSON


@dataclass
class Kernel:
    """One built kernel of a bundle (library relative to the bundle directory; error when its
    build failed, then there is no library)."""
    spec_id: str
    backend: str
    variant: str = ""
    library: str = ""
    device: str = ""
    clock: str = ""
    columns: dict = field(default_factory=dict)
    device_kernels: list = field(default_factory=list)  # per device function: launch, resources
    error: str = ""
    sha256: str = ""  # of the library, when the bundle was written
    artifact: dict = field(default_factory=dict)  # how it is called: layout, entry, convention


@dataclass
class Bundle:
    dir: Path
    meta: dict  # everything in the manifest but layers and kernels
    layers: list[ConvSpec]
    kernels: list[Kernel]

    @property
    def backends(self) -> list[str]:
        return list(dict.fromkeys(k.backend for k in self.kernels))

    @property
    def built_for(self) -> dict:
        return self.meta.get("built_for", {})

    def suite(self) -> Suite:
        return Suite(self.meta.get("suite", "bundle"), self.meta.get("suite_description", ""),
                     self.dir, tuple(self.layers))

    def kernel(self, spec_id: str, backend: str) -> list[Kernel]:
        return [k for k in self.kernels if k.spec_id == spec_id and k.backend == backend]


def spec_to_dict(spec: ConvSpec) -> dict:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


def spec_from_dict(data: dict) -> ConvSpec:
    return ConvSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def library_path(directory: Path, kernel: Kernel) -> Path:
    return Path(directory) / kernel.library


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write(directory: Path, meta: dict, layers: list[ConvSpec], kernels: list[Kernel],
          details: dict | None = None) -> Bundle:
    """The manifest and resources.csv; `details` (kernel index -> text files such as the CUDA
    source and ptxas report) are written beside each library."""
    directory = Path(directory)
    kernels = [dataclasses.replace(k, sha256=sha256(library_path(directory, k))) if k.library
               else k for k in kernels]
    for index, texts in (details or {}).items():
        library = library_path(directory, kernels[index])
        for key, suffix in TEXT_FILES.items():
            if texts.get(key):
                library.with_suffix(suffix).write_text(texts[key])
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta,
            "layers": [spec_to_dict(s) for s in layers],
            "kernels": [dataclasses.asdict(k) for k in kernels]}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        files.write_json(directory / MANIFEST, data, indent=1)
        bundle = Bundle(directory, meta, list(layers), list(kernels))
        resource_table(bundle).to_csv(directory / RESOURCES, index=False)
    except OSError as exc:
        raise UserError(f"cannot write the kernel bundle {directory}: {exc.strerror or exc}") from None
    return bundle


def read(directory) -> Bundle:
    """A bundle directory, validated; anything wrong with it is one line."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not os.path.lexists(path):
        raise UserError(f"{directory} is not a kernel bundle (no {MANIFEST}); make one with "
                        "'pwbench build'")
    data = files.parse_json(files.read_text(path, "kernel bundle manifest"), path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not a pwbench kernel bundle manifest")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{directory} was written by a newer pwbench (bundle format "
                        f"{data['format_version']}); upgrade pwbench to run it")
    try:
        layers = [spec_from_dict(s) for s in data.pop("layers")]
        kernels = [Kernel(**k) for k in data.pop("kernels")]
    except (KeyError, TypeError, UserError) as exc:
        raise UserError(f"{path} is damaged ({exc}); build the bundle again") from None
    missing = [k.library for k in kernels if k.library and not library_path(directory, k).is_file()]
    if missing:
        raise UserError(f"kernel bundle {directory} lacks {len(missing)} of its libraries "
                        f"(e.g. {missing[0]}); copy the whole directory")
    changed = [k.library for k in kernels
               if k.library and k.sha256 and sha256(library_path(directory, k)) != k.sha256]
    if changed:
        raise UserError(f"kernel bundle {directory}: {len(changed)} of its libraries differ from "
                        f"the ones built (e.g. {changed[0]}, by its SHA-256); copy the whole "
                        "directory again")
    return Bundle(directory, data, layers, kernels)


def check_runtime(bundle: Bundle, tvm_version: str, target, ffi_version: str | None = None) -> None:
    """Refuse (one line) a bundle this machine's TVM runtime or this target cannot run."""
    built_with = bundle.meta.get("tvm")
    if built_with != tvm_version:
        raise UserError(f"kernel bundle {bundle.dir} was built with TVM {built_with}, and this "
                        f"machine's TVM runtime is {tvm_version}: build it again with TVM "
                        f"{tvm_version} (or run it with TVM {built_with})")
    ffi_built = bundle.meta.get("tvm_ffi")
    if ffi_built and ffi_version and ffi_built != ffi_version:
        raise UserError(f"kernel bundle {bundle.dir} was built with tvm_ffi {ffi_built}, and this "
                        f"machine's is {ffi_version}: run it with tvm_ffi {ffi_built} "
                        "(scripts/make_tvm_runtime.py pins it)")
    problem = target.kernels_problem(bundle.built_for)
    if problem:
        raise UserError(f"kernel bundle {bundle.dir} is not for this machine: it was {problem}")


RESOURCE_COLUMNS = ("layer", "layout", "spec_id", "backend", "variant", "kernel", "dlight_rule", "grid",
                    "block", "threads_per_block", "dynamic_shared_bytes", "registers",
                    "shared_bytes", "barriers", "stack_bytes", "spill_store_bytes",
                    "spill_load_bytes", "local_bytes", "blocks_per_sm", "occupancy", "limited_by",
                    "tensor_cores", "build_s", "nvcc_s", "error")


def resource_table(bundle: Bundle) -> pd.DataFrame:
    """One row per device function of every kernel (a kernel that failed to build: one row with
    its error)."""
    names, layouts = {}, {}
    for spec in bundle.layers:
        names.setdefault(spec.id, spec.label)
        layouts[spec.id] = spec.layout
    rows = []
    for k in bundle.kernels:
        common = {"layer": names.get(k.spec_id, k.spec_id), "layout": layouts.get(k.spec_id),
                  "spec_id": k.spec_id,
                  "backend": k.backend, "variant": k.variant, "error": k.error,
                  **{c: k.columns.get(c) for c in ("dlight_rule", "tensor_cores", "build_s",
                                                   "nvcc_s")}}
        for device_kernel in k.device_kernels or [{}]:
            rows.append(common | {c: device_kernel.get(c) for c in RESOURCE_COLUMNS
                                  if c not in common})
    return pd.DataFrame(rows, columns=list(RESOURCE_COLUMNS))
