/* A C program that runs a graphc artifact through its generated C API, with no Python in
 * the process. Built by tests/graphc/test_aot.py with -DPREFIX=<c prefix> and
 * -DHEADER='"<name>.h"', linked against <name>.so.
 *
 *   aot_driver WEIGHTS DIR STEPS
 *
 * reads DIR/in<i>.bin (raw input i), runs STEPS times with <prefix>_run (parameter updates
 * applied), writes DIR/out<i>.bin (outputs of the last run) and DIR/param<i>.bin (the
 * parameters afterwards). Exit status 2: create failed, 3: run failed (message on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include HEADER

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define API(x) CAT(PREFIX, x)

static void *read_file(const char *path, size_t nbytes) {
    void *buf = malloc(nbytes ? nbytes : 1);
    FILE *f = fopen(path, "rb");
    if (!f || fread(buf, 1, nbytes, f) != nbytes) { fprintf(stderr, "cannot read %s\n", path); exit(4); }
    fclose(f);
    return buf;
}

static void write_file(const char *path, const void *data, size_t nbytes) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, nbytes, f) != nbytes) { fprintf(stderr, "cannot write %s\n", path); exit(4); }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s WEIGHTS DIR STEPS\n", argv[0]); return 1; }
    char err[512], path[4096];
    API(_model) *m = API(_create)(argv[1], err, sizeof err);
    if (!m) { fprintf(stderr, "%s\n", err); return 2; }
    const graphc_tensor_info *in = API(_inputs)(), *out = API(_outputs)(), *par = API(_params)();
    const void *inputs[64];
    void *outputs[64];
    int ni = 0, no = 0, np = 0;
    for (; in[ni].name && ni < 64; ni++) {
        snprintf(path, sizeof path, "%s/in%d.bin", argv[2], ni);
        inputs[ni] = read_file(path, in[ni].nbytes);
    }
    for (; out[no].name && no < 64; no++) outputs[no] = malloc(out[no].nbytes ? out[no].nbytes : 1);
    int steps = atoi(argv[3]);
    for (int s = 0; s < steps; s++) {
        int code = API(_run)(m, inputs, outputs);
        if (code) { fprintf(stderr, "%s\n", API(_error)(m)); API(_destroy)(m); return 3; }
    }
    for (int i = 0; i < no; i++) {
        snprintf(path, sizeof path, "%s/out%d.bin", argv[2], i);
        write_file(path, outputs[i], out[i].nbytes);
    }
    for (; par[np].name; np++) {
        snprintf(path, sizeof path, "%s/param%d.bin", argv[2], np);
        write_file(path, API(_param_data)(m, np), par[np].nbytes);
    }
    API(_destroy)(m);
    printf("ok %d inputs %d outputs %d params %d steps\n", ni, no, np, steps);
    return 0;
}
