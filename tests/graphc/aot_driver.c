/* A C program that runs a graphc artifact through its generated C API, with no Python in
 * the process. Built by tests/graphc/test_aot.py and test_aot_tamper.py with
 * -DPREFIX=<c prefix> and -DHEADER='"<name>.h"' (and -ldl); it loads the library at run
 * time through the header's verifying loader, <prefix>_open.
 *
 *   aot_driver LIBRARY WEIGHTS DIR STEPS
 *
 * reads DIR/in<i>.bin (raw input i), runs STEPS times with <prefix>_run_sized (parameter
 * updates applied), writes DIR/out<i>.bin (outputs of the last run) and DIR/param<i>.bin
 * (the parameters afterwards). Exit status (message on stderr): 5: the library was refused
 * (<prefix>_open), 2: create failed (the weights), 3: run failed, 4: the driver's own I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include HEADER

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define API(x) CAT(PREFIX, x)
#define MAX_TENSORS 64

static void *read_file(const char *path, size_t nbytes) {
    void *buf = malloc(nbytes ? nbytes : 1);
    FILE *f = fopen(path, "rb");
    if (!buf || !f || fread(buf, 1, nbytes, f) != nbytes) { fprintf(stderr, "cannot read %s\n", path); exit(4); }
    fclose(f);
    return buf;
}

static void write_file(const char *path, const void *data, size_t nbytes) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, nbytes, f) != nbytes) { fprintf(stderr, "cannot write %s\n", path); exit(4); }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s LIBRARY WEIGHTS DIR STEPS\n", argv[0]); return 1; }
    char err[512], path[4096];
    API(_api) api;
    if (API(_open)(argv[1], &api, err, sizeof err) != GRAPHC_OK) { fprintf(stderr, "%s\n", err); return 5; }
    API(_model) *m = api.create(argv[2], err, sizeof err);
    if (!m) { fprintf(stderr, "%s\n", err); API(_close)(&api); return 2; }
    const graphc_tensor_info *in = api.inputs(), *out = api.outputs(), *par = api.params();
    const void *inputs[MAX_TENSORS];
    void *outputs[MAX_TENSORS];
    size_t in_bytes[MAX_TENSORS], out_bytes[MAX_TENSORS];
    int ni = 0, no = 0, np = 0;
    for (; ni < MAX_TENSORS && in[ni].name; ni++) {
        snprintf(path, sizeof path, "%s/in%d.bin", argv[3], ni);
        inputs[ni] = read_file(path, in[ni].nbytes);
        in_bytes[ni] = in[ni].nbytes;
    }
    for (; no < MAX_TENSORS && out[no].name; no++) {
        outputs[no] = malloc(out[no].nbytes ? out[no].nbytes : 1);
        out_bytes[no] = out[no].nbytes;
    }
    int steps = atoi(argv[4]);
    for (int s = 0; s < steps; s++) {
        int code = api.run_sized(m, ni, inputs, in_bytes, no, outputs, out_bytes);
        if (code) { fprintf(stderr, "%s (code %d)\n", api.error(m), code); api.destroy(m); API(_close)(&api); return 3; }
    }
    for (int i = 0; i < no; i++) {
        snprintf(path, sizeof path, "%s/out%d.bin", argv[3], i);
        write_file(path, outputs[i], out[i].nbytes);
    }
    for (; np < MAX_TENSORS && par[np].name; np++) {
        snprintf(path, sizeof path, "%s/param%d.bin", argv[3], np);
        write_file(path, api.param_data(m, np), par[np].nbytes);
    }
    api.destroy(m);
    API(_close)(&api);
    printf("ok %d inputs %d outputs %d params %d steps\n", ni, no, np, steps);
    return 0;
}
