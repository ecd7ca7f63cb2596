"""The C API of an exported artifact: a header and the C source that wraps a program's entry.

The LLVM module exports `void <program>_entry(void **args)` (see codegen.py); the wrapper
generated here turns that into an API a C program can use without knowing the kernel IR:

    <p>_model *<p>_create(const char *weights_path, char *error, size_t error_size);
    int  <p>_run(<p>_model *m, const void *const *inputs, void *const *outputs);
    int  <p>_call(<p>_model *m, const void *const *inputs, const void *const *params,
                  void *const *outputs, void *const *updates);
    int  <p>_run_sized(...), <p>_call_sized(...)   the same, with tensor counts and byte sizes
    const char *<p>_error(const <p>_model *m);
    const char *<p>_artifact_facts(void);           the manifest keys it was built with (JSON)
    void <p>_destroy(<p>_model *m);
    void *<p>_param_data(<p>_model *m, int i);
    int  <p>_set_num_threads(int n);
    const graphc_tensor_info *<p>_inputs(void), *<p>_outputs(void), *<p>_params(void);

`create` checks its own tables (every tensor 64-byte aligned and inside the weights, every
result inside its buffer), reads the weights file into one 64-byte aligned block
(parameters and constants), checks its size and checksum and the CPU features the code was
compiled for (with `__builtin_cpu_supports`, in code compiled for the baseline ISA, so a
missing feature is an error message and never SIGILL), and allocates the arena and the
program's output buffers. Every entry point checks its pointers before anything runs (the
sized forms also the tensor counts and byte sizes) and returns GRAPHC_ERR_ARGUMENT with a
message in `<p>_error(m)`.

The header, written after linking, holds the library's size and checksum and a verifying
loader, `<p>_open(library_path, &api, err, n)`: it reads the .so, refuses it if either
differs (truncated, altered, another export), and only then dlopens it and resolves the
API into a table of function pointers. A C program that links the .so instead has no such
check: the dynamic loader maps whatever is there.

`run` uses the model's parameters and applies parameter updates to them after a
successful call (a training step); `call` is the functional form (the Python loader uses
its sized form, `call_sized`).
Results are copied out of the program's storage (an output can be a view of an input, a
parameter or an arena temporary), so callers pass plain dense buffers. A model is used by
one thread at a time; create one per thread for concurrent calls.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# CPU features LLVM's feature string may require that gcc's __builtin_cpu_supports can test.
CHECKABLE_FEATURES = ("sse4.1", "sse4.2", "avx", "avx2", "fma", "bmi", "bmi2", "avx512f",
                      "avx512vl", "avx512bw", "avx512dq", "avx512cd", "avx512vnni")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str              # graphc dtype name (f32, i32, ...)
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class Storage:
    """Where a program buffer lives after a call: an external slot (or -1 for the arena)
    and a byte offset into it."""
    slot: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class CApiSpec:
    prefix: str                     # C identifier prefix of the API
    entry: str                      # the LLVM module's entry symbol
    num_threads_global: str         # the module's i32 team-size global
    max_threads: int                # the GEMM workspace was sized for this many threads
    n_ext: int                      # external slots (the args array has n_ext + 1 entries)
    ext_bytes: tuple[int, ...]      # bytes of each external buffer
    input_slots: tuple[int, ...]    # per graph input: its slot, or -1 if the program ignores it
    param_slots: tuple[int, ...]    # per parameter: its slot, or -1
    const_slots: tuple[tuple[int, int], ...]   # (slot, byte offset in the weights block)
    output_slots: tuple[int, ...]   # program-owned output buffers, allocated by create
    status_slot: int                # the i32[2] status buffer's slot, or -1
    errors: tuple[str, ...]         # messages of status codes 1..n
    results: tuple[Storage, ...]    # per graph output
    updates: tuple[tuple[int, Storage], ...]   # (parameter index, new value's storage)
    param_offsets: tuple[int, ...]  # byte offset of each parameter in the weights block
    arena_bytes: int
    weights_bytes: int
    weights_checksum: int
    features: tuple[str, ...]       # required CPU features (checkable subset)
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    params: tuple[TensorInfo, ...]
    description: str                # a comment for the header
    facts: str = "{}"               # JSON: the manifest keys bound to this build (aot_manifest.py)


def c_identifier(name: str) -> str:
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return ident if ident and not ident[0].isdigit() else "m_" + ident


def c_string(s: str) -> str:
    out = []
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def weights_checksum(data: bytes | memoryview) -> int:
    """sum(word_i * (2i + 1)) mod 2**64 over the little-endian u64 words of a file (the last
    word zero-padded): position-sensitive, so any changed word changes it (odd multipliers
    are invertible mod 2**64), and cheap in numpy and in C. With the size it guards the
    weights and the library against truncation and accidental damage (not against an
    adversary); the manifest's sha256 is the strong check."""
    import numpy as np
    if len(data) % 8:
        data = bytes(data) + b"\0" * (-len(data) % 8)
    words = np.frombuffer(data, "<u8")
    weights = np.arange(1, 2 * len(words) + 1, 2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return int(np.sum(words * weights, dtype=np.uint64))


def header(spec: CApiSpec, library: tuple[int, int] | None = None) -> str:
    """The C header; with library=(size, checksum) of the linked .so it also holds the
    verifying loader `<p>_open` (the library itself is compiled against the header
    without it)."""
    p = spec.prefix
    guard = f"GRAPHC_{p.upper()}_H"

    def table(name: str, infos: tuple[TensorInfo, ...]) -> str:
        return "\n".join(f" *   {i}: {t.name}: {t.dtype}{list(t.shape)}" for i, t in enumerate(infos)) \
            or " *   (none)"

    return f"""/* Generated by graphc: the C API of artifact "{p}". Do not edit.
 *
{chr(10).join(' * ' + line if line else ' *' for line in spec.description.splitlines())}
 *
 * Inputs (pass in this order, dense row-major, native little-endian):
{table('inputs', spec.inputs)}
 * Outputs:
{table('outputs', spec.outputs)}
 * Parameters (loaded from the .weights file by {p}_create):
{table('params', spec.params)}
 *
 * Functions returning int give GRAPHC_OK (0) on success and a nonzero code on error;
 * {p}_error(m) then says what went wrong. A model is used by one thread at a time.
 */
#ifndef {guard}
#define {guard}

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#ifndef GRAPHC_TENSOR_INFO_DEFINED
#define GRAPHC_TENSOR_INFO_DEFINED
typedef struct graphc_tensor_info {{
    const char *name;
    const char *dtype;       /* "f32", "f64", "f16", "i32", "i64" or "bool" */
    int rank;
    const int64_t *shape;
    size_t nbytes;
}} graphc_tensor_info;

#define GRAPHC_OK 0
#define GRAPHC_ERR_ARGUMENT (-1)   /* a NULL pointer, a wrong tensor count or byte size */
#define GRAPHC_ERR_ARTIFACT (-2)   /* a missing, truncated, altered or mismatched file */
#define GRAPHC_ERR_MEMORY (-3)
/* codes > 0: the compiled program reported an error (e.g. an index out of range) */
#endif

#define {p.upper()}_NUM_INPUTS {len(spec.inputs)}
#define {p.upper()}_NUM_OUTPUTS {len(spec.outputs)}
#define {p.upper()}_NUM_PARAMS {len(spec.params)}

typedef struct {p}_model {p}_model;

/* Load the weights file and allocate working memory; NULL on error (message in error). */
{p}_model *{p}_create(const char *weights_path, char *error, size_t error_size);
/* Run with the model's parameters; parameter updates (a training step) are applied. */
int {p}_run({p}_model *m, const void *const *inputs, void *const *outputs);
/* Run with the caller's parameters (NULL: the model's); updates, if the graph has any, are
   written to updates[i] (one buffer per parameter; NULL entries skip it), never applied. */
int {p}_call({p}_model *m, const void *const *inputs, const void *const *params,
             void *const *outputs, void *const *updates);
/* The same, checked: the caller says how many tensors it passes and each buffer's size in
   bytes; a count or size that differs from the tables is GRAPHC_ERR_ARGUMENT and nothing
   runs. (params may be NULL with n_params 0: the model's.) */
int {p}_run_sized({p}_model *m, int n_inputs, const void *const *inputs, const size_t *input_bytes,
                  int n_outputs, void *const *outputs, const size_t *output_bytes);
int {p}_call_sized({p}_model *m, int n_inputs, const void *const *inputs, const size_t *input_bytes,
                   int n_params, const void *const *params, const size_t *param_bytes,
                   int n_outputs, void *const *outputs, const size_t *output_bytes,
                   void *const *updates);
const char *{p}_error(const {p}_model *m);
void {p}_destroy({p}_model *m);
/* The model's parameter storage (read or write between calls). */
void *{p}_param_data({p}_model *m, int i);
/* Threads for parallel loops, clamped to [1, max] (max: the export's max_threads). */
int {p}_set_num_threads(int n);
/* Tensor tables, each terminated by an entry whose name is NULL. */
const graphc_tensor_info *{p}_inputs(void);
const graphc_tensor_info *{p}_outputs(void);
const graphc_tensor_info *{p}_params(void);
/* The manifest keys this library was built with, as JSON (gc.load compares them). */
const char *{p}_artifact_facts(void);
{_loader(spec, library) if library else ""}
#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"""


def _loader(spec: CApiSpec, library: tuple[int, int]) -> str:
    """The header's verifying loader: check the .so's size and checksum, then dlopen it."""
    p, P = spec.prefix, spec.prefix.upper()
    size, checksum = library
    names = ("create", "run", "call", "run_sized", "call_sized", "error", "destroy", "param_data",
             "set_num_threads", "inputs", "outputs", "params", "artifact_facts")
    resolve = "\n".join(f'    if (!(*(void **)&api->{n} = dlsym(api->handle, "{p}_{n}"))) missing = "{p}_{n}";'
                        for n in names)
    return f"""
/* --- the verifying loader --------------------------------------------------------------
 * {p}_open reads the library, refuses it unless its size and checksum are the ones below
 * (it is truncated, altered or from another export), and only then dlopens it; call
 * through the returned table. (It guards against damage, not against someone replacing
 * the file between the check and the dlopen.) Link with -ldl on glibc before 2.34. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define {P}_LIBRARY_BYTES {size}ull
#define {P}_LIBRARY_CHECKSUM {checksum}ull

typedef struct {p}_api {{
    void *handle;
    {p}_model *(*create)(const char *, char *, size_t);
    int (*run)({p}_model *, const void *const *, void *const *);
    int (*call)({p}_model *, const void *const *, const void *const *, void *const *, void *const *);
    int (*run_sized)({p}_model *, int, const void *const *, const size_t *, int, void *const *,
                     const size_t *);
    int (*call_sized)({p}_model *, int, const void *const *, const size_t *, int, const void *const *,
                      const size_t *, int, void *const *, const size_t *, void *const *);
    const char *(*error)(const {p}_model *);
    void (*destroy)({p}_model *);
    void *(*param_data)({p}_model *, int);
    int (*set_num_threads)(int);
    const graphc_tensor_info *(*inputs)(void);
    const graphc_tensor_info *(*outputs)(void);
    const graphc_tensor_info *(*params)(void);
    const char *(*artifact_facts)(void);
}} {p}_api;

static inline void {p}_close({p}_api *api) {{
    if (api && api->handle) dlclose(api->handle);
    if (api) memset(api, 0, sizeof *api);
}}

static inline int {p}_open(const char *library_path, {p}_api *api, char *error, size_t error_size) {{
    char scratch[8];
    if (!error) {{ error = scratch; error_size = sizeof scratch; }}
    if (error_size) error[0] = 0;
    if (!api || !library_path) {{
        snprintf(error, error_size, "{p}_open: library_path and api must not be NULL");
        return GRAPHC_ERR_ARGUMENT;
    }}
    memset(api, 0, sizeof *api);
    FILE *f = fopen(library_path, "rb");
    if (!f) {{
        snprintf(error, error_size, "{p}: cannot open the library %s", library_path);
        return GRAPHC_ERR_ARTIFACT;
    }}
    unsigned char *data = (unsigned char *)malloc({P}_LIBRARY_BYTES + 8);
    if (!data) {{ fclose(f); snprintf(error, error_size, "{p}: out of memory"); return GRAPHC_ERR_MEMORY; }}
    size_t got = fread(data, 1, {P}_LIBRARY_BYTES + 1, f);
    fclose(f);
    uint64_t h = 0;
    for (size_t i = 0; got == {P}_LIBRARY_BYTES && i < (got + 7) / 8; i++) {{
        uint64_t w = 0;
        memcpy(&w, data + 8 * i, got - 8 * i < 8 ? got - 8 * i : 8);
        h += w * (2 * (uint64_t)i + 1);
    }}
    free(data);
    if (got != {P}_LIBRARY_BYTES || h != {P}_LIBRARY_CHECKSUM) {{
        snprintf(error, error_size, "{p}: the library %s %s this header (%s): export it again",
                 library_path, got != {P}_LIBRARY_BYTES ? "has another size than" : "does not match",
                 got != {P}_LIBRARY_BYTES ? "truncated, or from another export" : "checksum differs: altered, "
                 "or from another export");
        return GRAPHC_ERR_ARTIFACT;
    }}
    api->handle = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
    if (!api->handle) {{
        const char *why = dlerror();
        snprintf(error, error_size, "{p}: cannot load %s: %s", library_path, why ? why : "dlopen failed");
        return GRAPHC_ERR_ARTIFACT;
    }}
    const char *missing = NULL;
{resolve}
    if (missing) {{
        snprintf(error, error_size, "{p}: %s does not export %s", library_path, missing);
        {p}_close(api);
        return GRAPHC_ERR_ARTIFACT;
    }}
    return GRAPHC_OK;
}}
"""


def _arr(ctype: str, name: str, values) -> str:
    vals = list(values)
    body = ", ".join(str(v) for v in vals) if vals else "0"
    return f"static const {ctype} {name}[{max(len(vals), 1)}] = {{{body}}};"


def _infos(name: str, infos: tuple[TensorInfo, ...]) -> str:
    lines = []
    for i, t in enumerate(infos):
        lines.append(_arr("int64_t", f"{name}_shape{i}", t.shape))
    rows = [f"{{{c_string(t.name)}, {c_string(t.dtype)}, {len(t.shape)}, {name}_shape{i}, {t.nbytes}u}}"
            for i, t in enumerate(infos)] + ["{0, 0, 0, 0, 0}"]  # terminated by a NULL name
    lines.append(f"static const graphc_tensor_info {name}[{len(rows)}] = {{\n    " + ",\n    ".join(rows)
                 + "\n};")
    return "\n".join(lines)


def source(spec: CApiSpec, header_name: str) -> str:
    p = spec.prefix
    s = spec
    feature_checks = "\n".join(
        f'    if (!__builtin_cpu_supports({c_string(f)})) return {c_string(f)};' for f in s.features)
    errors = ",\n    ".join(c_string(e) for e in s.errors) or '""'
    status_before = status_after = ""
    if s.status_slot >= 0:
        status_before = f"    ((int32_t *)args[{s.status_slot}])[0] = 0;"
        status_after = f"""    int32_t code = ((int32_t *)args[{s.status_slot}])[0];
    if (code) {{
        snprintf(m->error, sizeof m->error, "{p}: %s",
                 code > 0 && code <= N_ERR ? error_text[code - 1] : "compiled kernel reported an error");
        return code;
    }}"""
    res_slot = [r.slot for r in s.results]
    res_off = [r.offset for r in s.results]
    res_bytes = [r.nbytes for r in s.results]
    upd_param = [j for j, _ in s.updates]
    upd_slot = [st.slot for _, st in s.updates]
    upd_off = [st.offset for _, st in s.updates]
    upd_bytes = [st.nbytes for _, st in s.updates]
    # updates the program writes into the parameter's own storage (passes/donate.py)
    upd_in_place = [int(st.slot == s.param_slots[j] and st.offset == 0) for j, st in s.updates]
    return f"""/* Generated by graphc: the C API of artifact "{p}" (see {header_name}). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "{header_name}"

extern void {s.entry}(void **args);
extern int32_t {s.num_threads_global};
extern int omp_get_max_threads(void);

#define N_EXT {s.n_ext}
#define N_IN {len(s.inputs)}
#define N_OUT {len(s.outputs)}
#define N_PARAM {len(s.params)}
#define N_CONST {len(s.const_slots)}
#define N_OWN {len(s.output_slots)}
#define N_UPD {len(s.updates)}
#define N_ERR {len(s.errors)}
#define MAX_THREADS {max(1, s.max_threads)}
#define ARENA_BYTES {s.arena_bytes}ull
#define WEIGHTS_BYTES {s.weights_bytes}ull
#define WEIGHTS_CHECKSUM {s.weights_checksum}ull

{_arr("uint64_t", "ext_bytes", s.ext_bytes)}
{_arr("int", "input_slot", s.input_slots)}
{_arr("int", "param_slot", s.param_slots)}
{_arr("uint64_t", "param_offset", s.param_offsets)}
{_arr("int", "const_slot", [c for c, _ in s.const_slots])}
{_arr("uint64_t", "const_offset", [o for _, o in s.const_slots])}
{_arr("int", "own_slot", s.output_slots)}
{_arr("int", "result_slot", res_slot)}
{_arr("uint64_t", "result_offset", res_off)}
{_arr("uint64_t", "result_bytes", res_bytes)}
{_arr("int", "update_param", upd_param)}
{_arr("int", "update_slot", upd_slot)}
{_arr("uint64_t", "update_offset", upd_off)}
{_arr("uint64_t", "update_bytes", upd_bytes)}
{_arr("int", "update_in_place", upd_in_place)}
static const char *const error_text[{max(len(s.errors), 1)}] = {{
    {errors}
}};
{_infos("input_info", s.inputs)}
{_infos("output_info", s.outputs)}
{_infos("param_info", s.params)}

struct {p}_model {{
    unsigned char *weights;     /* parameters and constants, 64-byte aligned */
    unsigned char *arena;
    unsigned char *owned;       /* the program's output buffers */
    unsigned char *staging;     /* updates whose value lives in another parameter */
    void *own_ptr[N_OWN > 0 ? N_OWN : 1];
    char error[512];
}};

static size_t round64(size_t n) {{ return (n + 63u) & ~(size_t)63u; }}

static void *alloc64(size_t n) {{
    return aligned_alloc(64, round64(n > 0 ? n : 1));
}}

static const char *missing_cpu_feature(void) {{
    __builtin_cpu_init();
{feature_checks}
    return NULL;
}}

static int32_t threads_set = 0;

int {p}_set_num_threads(int n) {{
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    {s.num_threads_global} = n;
    threads_set = 1;
    return n;
}}

const graphc_tensor_info *{p}_inputs(void) {{ return input_info; }}
const graphc_tensor_info *{p}_outputs(void) {{ return output_info; }}
const graphc_tensor_info *{p}_params(void) {{ return param_info; }}
const char *{p}_error(const {p}_model *m) {{ return m ? m->error : "{p}: no model (NULL)"; }}
const char *{p}_artifact_facts(void) {{ return {c_string(s.facts)}; }}

void *{p}_param_data({p}_model *m, int i) {{
    if (!m || i < 0 || i >= N_PARAM) return NULL;
    return m->weights + param_offset[i];
}}

void {p}_destroy({p}_model *m) {{
    if (!m) return;
    free(m->weights);
    free(m->arena);
    free(m->owned);
    free(m->staging);
    free(m);
}}

static uint64_t checksum(const unsigned char *p, size_t n) {{
    uint64_t h = 0;
    for (size_t i = 0; i < n / 8; i++) {{
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        h += w * (2 * (uint64_t)i + 1);
    }}
    return h;
}}

/* The compiled tables, checked once before they are used: a damaged library must not make
   create or run read or write out of bounds. NULL when they are consistent. */
static const char *table_problem(void) {{
    for (int i = 0; i < N_PARAM; i++) {{
        if (param_offset[i] % 64 || param_offset[i] > WEIGHTS_BYTES
            || param_info[i].nbytes > WEIGHTS_BYTES - param_offset[i]) return "a parameter lies outside the weights";
        if (param_slot[i] < -1 || param_slot[i] >= N_EXT) return "a parameter slot is out of range";
    }}
    for (int i = 0; i < N_IN; i++)
        if (input_slot[i] < -1 || input_slot[i] >= N_EXT) return "an input slot is out of range";
    for (int i = 0; i < N_CONST; i++) {{
        if (const_slot[i] < 0 || const_slot[i] >= N_EXT) return "a constant slot is out of range";
        if (const_offset[i] % 64 || const_offset[i] > WEIGHTS_BYTES
            || ext_bytes[const_slot[i]] > WEIGHTS_BYTES - const_offset[i]) return "a constant lies outside the weights";
    }}
    for (int i = 0; i < N_OWN; i++)
        if (own_slot[i] < 0 || own_slot[i] >= N_EXT) return "an output slot is out of range";
    for (int i = 0; i < N_OUT; i++) {{
        if (result_slot[i] < -1 || result_slot[i] >= N_EXT) return "a result slot is out of range";
        uint64_t room = result_slot[i] < 0 ? ARENA_BYTES : ext_bytes[result_slot[i]];
        if (result_offset[i] > room || result_bytes[i] > room - result_offset[i]
            || result_bytes[i] != output_info[i].nbytes) return "a result lies outside its buffer";
    }}
    for (int i = 0; i < N_UPD; i++) {{
        if (update_param[i] < 0 || update_param[i] >= N_PARAM || update_slot[i] < -1 || update_slot[i] >= N_EXT)
            return "an update refers to no parameter or slot";
        uint64_t room = update_slot[i] < 0 ? ARENA_BYTES : ext_bytes[update_slot[i]];
        if (update_offset[i] > room || update_bytes[i] > room - update_offset[i]
            || update_bytes[i] != param_info[update_param[i]].nbytes) return "an update lies outside its buffer";
        if (update_in_place[i] && param_slot[update_param[i]] < 0) return "an in-place update has no parameter slot";
    }}
    return NULL;
}}

{p}_model *{p}_create(const char *weights_path, char *error, size_t error_size) {{
    char scratch[8];
    if (!error) {{ error = scratch; error_size = sizeof scratch; }}
    if (error_size) error[0] = 0;
    const char *bad_table = table_problem();
    if (bad_table) {{
        snprintf(error, error_size, "{p}: the library is damaged (%s): export it again", bad_table);
        return NULL;
    }}
    const char *feature = missing_cpu_feature();
    if (feature) {{
        snprintf(error, error_size, "{p}: this CPU lacks %s, which the artifact was compiled "
                 "for; export it again for this machine", feature);
        return NULL;
    }}
    {p}_model *m = calloc(1, sizeof *m);
    if (!m) {{ snprintf(error, error_size, "{p}: out of memory"); return NULL; }}
    m->weights = alloc64(WEIGHTS_BYTES);
    m->arena = alloc64(ARENA_BYTES);
    size_t owned_bytes = 0, staging_bytes = 0;
    for (int i = 0; i < N_OWN; i++) owned_bytes += round64(ext_bytes[own_slot[i]]);
    for (int i = 0; i < N_UPD; i++) staging_bytes += round64(update_bytes[i]);
    m->owned = alloc64(owned_bytes);
    m->staging = alloc64(staging_bytes);
    if (!m->weights || !m->arena || !m->owned || !m->staging) {{
        snprintf(error, error_size, "{p}: out of memory");
        {p}_destroy(m);
        return NULL;
    }}
    size_t off = 0;
    for (int i = 0; i < N_OWN; i++) {{ m->own_ptr[i] = m->owned + off; off += round64(ext_bytes[own_slot[i]]); }}
    if (WEIGHTS_BYTES > 0 || weights_path) {{
        FILE *f = weights_path ? fopen(weights_path, "rb") : NULL;
        if (!f) {{
            snprintf(error, error_size, "{p}: cannot open weights file %s", weights_path ? weights_path : "(null)");
            {p}_destroy(m);
            return NULL;
        }}
        size_t got = fread(m->weights, 1, WEIGHTS_BYTES, f);
        int extra = fgetc(f) != EOF;
        fclose(f);
        if (got != WEIGHTS_BYTES || extra) {{
            snprintf(error, error_size, "{p}: weights file %s has %s%zu bytes, the artifact expects %llu "
                     "(truncated, or from another export)", weights_path, extra ? "more than " : "", got,
                     (unsigned long long)WEIGHTS_BYTES);
            {p}_destroy(m);
            return NULL;
        }}
        if (checksum(m->weights, WEIGHTS_BYTES) != WEIGHTS_CHECKSUM) {{
            snprintf(error, error_size, "{p}: weights file %s does not match the artifact (checksum "
                     "differs: altered, or from another export)", weights_path);
            {p}_destroy(m);
            return NULL;
        }}
    }}
    if (!threads_set) {{
        int n = omp_get_max_threads();
        {p}_set_num_threads(n);
    }}
    return m;
}}

static unsigned char *storage(void **args, int slot, uint64_t offset) {{
    return (unsigned char *)(slot < 0 ? args[N_EXT] : args[slot]) + offset;
}}

static int invoke({p}_model *m, const void *const *inputs, const void *const *params,
                  void *const *outputs, void *const *updates, int apply_updates) {{
    if (!m) return GRAPHC_ERR_ARGUMENT;
    m->error[0] = 0;
    if ((N_IN && !inputs) || (N_OUT && !outputs)) {{
        snprintf(m->error, sizeof m->error, "{p}: inputs and outputs must be arrays of %d and %d pointers",
                 N_IN, N_OUT);
        return GRAPHC_ERR_ARGUMENT;
    }}
    for (int i = 0; i < N_OUT; i++) {{
        if (!outputs[i]) {{
            snprintf(m->error, sizeof m->error, "{p}: output %d (%s) is NULL", i, output_info[i].name);
            return GRAPHC_ERR_ARGUMENT;
        }}
    }}
    void *args[N_EXT + 1];
    memset(args, 0, sizeof args);
    for (int i = 0; i < N_IN; i++) {{
        if (!inputs[i]) {{
            snprintf(m->error, sizeof m->error, "{p}: input %d (%s) is NULL", i, input_info[i].name);
            return GRAPHC_ERR_ARGUMENT;
        }}
        if (input_slot[i] >= 0) args[input_slot[i]] = (void *)inputs[i];
    }}
    for (int i = 0; i < N_PARAM; i++) {{
        const void *src = params && params[i] ? params[i] : m->weights + param_offset[i];
        if (param_slot[i] >= 0) args[param_slot[i]] = (void *)src;
    }}
    for (int i = 0; i < N_CONST; i++) args[const_slot[i]] = m->weights + const_offset[i];
    for (int i = 0; i < N_OWN; i++) args[own_slot[i]] = m->own_ptr[i];
    args[N_EXT] = m->arena;
    if (!apply_updates || params) {{
        /* the program updates some parameters in place: give it copies, so neither the
           caller's arrays nor the model's weights change on this path */
        size_t off = 0;
        for (int i = 0; i < N_UPD; i++) {{
            if (update_in_place[i]) {{
                int j = update_param[i];
                memcpy(m->staging + off, args[param_slot[j]], update_bytes[i]);
                args[param_slot[j]] = m->staging + off;
            }}
            off += round64(update_bytes[i]);
        }}
    }}
{status_before}
    {s.entry}(args);
{status_after}
    for (int i = 0; i < N_OUT; i++)
        memcpy(outputs[i], storage(args, result_slot[i], result_offset[i]), result_bytes[i]);
    if (updates) {{
        for (int i = 0; i < N_UPD; i++)
            if (updates[update_param[i]])
                memcpy(updates[update_param[i]], storage(args, update_slot[i], update_offset[i]), update_bytes[i]);
    }} else if (apply_updates) {{
        /* stage first: a new value may live in another parameter's storage */
        size_t off = 0;
        for (int i = 0; i < N_UPD; i++) {{
            if (!update_in_place[i])
                memcpy(m->staging + off, storage(args, update_slot[i], update_offset[i]), update_bytes[i]);
            off += round64(update_bytes[i]);
        }}
        off = 0;
        for (int i = 0; i < N_UPD; i++) {{
            if (!update_in_place[i])
                memcpy(m->weights + param_offset[update_param[i]], m->staging + off, update_bytes[i]);
            off += round64(update_bytes[i]);
        }}
    }}
    return 0;
}}

int {p}_call({p}_model *m, const void *const *inputs, const void *const *params,
             void *const *outputs, void *const *updates) {{
    return invoke(m, inputs, params, outputs, updates, 0);
}}

int {p}_run({p}_model *m, const void *const *inputs, void *const *outputs) {{
    return invoke(m, inputs, NULL, outputs, NULL, 1);
}}

/* 0 when the caller's count and byte sizes agree with a tensor table, else a message */
static int sizes_differ({p}_model *m, const char *what, int n, int want, const void *const *ptrs,
                        const size_t *bytes, const graphc_tensor_info *info) {{
    if (n != want) {{
        snprintf(m->error, sizeof m->error, "{p}: %d %s given, the model has %d", n, what, want);
        return 1;
    }}
    if (n && (!ptrs || !bytes)) {{
        snprintf(m->error, sizeof m->error, "{p}: the %s and their byte sizes must not be NULL", what);
        return 1;
    }}
    for (int i = 0; i < n; i++) {{
        if (bytes[i] != info[i].nbytes) {{
            snprintf(m->error, sizeof m->error, "{p}: %s %d (%s) has %zu bytes, expected %zu (%s, %d dims)",
                     what, i, info[i].name, bytes[i], info[i].nbytes, info[i].dtype, info[i].rank);
            return 1;
        }}
    }}
    return 0;
}}

int {p}_call_sized({p}_model *m, int n_inputs, const void *const *inputs, const size_t *input_bytes,
                   int n_params, const void *const *params, const size_t *param_bytes,
                   int n_outputs, void *const *outputs, const size_t *output_bytes,
                   void *const *updates) {{
    if (!m) return GRAPHC_ERR_ARGUMENT;
    m->error[0] = 0;
    if (sizes_differ(m, "inputs", n_inputs, N_IN, inputs, input_bytes, input_info)
        || sizes_differ(m, "outputs", n_outputs, N_OUT, (const void *const *)outputs, output_bytes, output_info)
        || ((params || n_params) && sizes_differ(m, "params", n_params, N_PARAM, params, param_bytes, param_info)))
        return GRAPHC_ERR_ARGUMENT;
    return invoke(m, inputs, params, outputs, updates, 0);
}}

int {p}_run_sized({p}_model *m, int n_inputs, const void *const *inputs, const size_t *input_bytes,
                  int n_outputs, void *const *outputs, const size_t *output_bytes) {{
    if (!m) return GRAPHC_ERR_ARGUMENT;
    m->error[0] = 0;
    if (sizes_differ(m, "inputs", n_inputs, N_IN, inputs, input_bytes, input_info)
        || sizes_differ(m, "outputs", n_outputs, N_OUT, (const void *const *)outputs, output_bytes, output_info))
        return GRAPHC_ERR_ARGUMENT;
    return invoke(m, inputs, NULL, outputs, NULL, 1);
}}
"""
