/* A C host for any model kiln compiled: written only against the generated
   header (NAME.h) and the runtime header (kiln_runtime.h).

   Build (see build.sh, which does all of this):
     cc -std=c99 -O2 -Iout -I../../runtime/include \
        -DKILN_MODEL=mnist_mlp -DKILN_MODEL_UPPER=MNIST_MLP \
        main.c out/mnist_mlp.o -L../../target/release -lkiln_runtime -lpthread -ldl -lm

   Usage: host [-n RUNS] [-o OUTDIR] INPUT...
     Each INPUT is a .npy file (its dtype and size are checked against the
     model) or a raw little-endian file of exactly the input's byte size, one
     per model input, in order. Writes OUTDIR/out_K.npy for each output K
     (default OUTDIR: .) and prints a summary; -n runs the model RUNS times and
     prints the mean latency. Exit status: 0 ok, 1 bad input, 2 usage, 3 the
     model returned an error. */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln_runtime.h"

#if !defined(KILN_MODEL) || !defined(KILN_MODEL_UPPER)
#error "define KILN_MODEL (e.g. mnist_mlp) and KILN_MODEL_UPPER (e.g. MNIST_MLP)"
#endif
#define STR_(x) #x
#define STR(x) STR_(x)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#ifndef KILN_MODEL_HEADER
#define KILN_MODEL_HEADER STR(KILN_MODEL.h)
#endif
#include KILN_MODEL_HEADER

/* NAME_run, NAME_input_sizes, ... and the per-tensor macros NAME_INPUT_i_FIELD. */
#define LOWER(x) CAT(KILN_MODEL, x)
#define UPPER(x) CAT(KILN_MODEL_UPPER, x)
#define FIELD(KIND, I, F) UPPER(CAT(CAT(CAT(_, KIND), CAT(_, I)), CAT(_, F)))
#define NUM_INPUTS UPPER(_NUM_INPUTS)
#define NUM_OUTPUTS UPPER(_NUM_OUTPUTS)

typedef struct {
  const char *name;
  int dtype;
  int rank;
  const size_t *dims;
} tensor_desc;

/* One description per tensor, from the header's macros (up to 8 of each). */
#define DESC(KIND, I)                                                          \
  static const size_t dims_##KIND##_##I[] = FIELD(KIND, I, DIMS);              \
  static const tensor_desc desc_##KIND##_##I = {                               \
      FIELD(KIND, I, NAME), FIELD(KIND, I, DTYPE), FIELD(KIND, I, RANK),       \
      dims_##KIND##_##I};
#if NUM_INPUTS > 8 || NUM_OUTPUTS > 8
#error "this host describes at most 8 inputs and 8 outputs"
#endif
#if NUM_INPUTS > 0
DESC(INPUT, 0)
#endif
#if NUM_INPUTS > 1
DESC(INPUT, 1)
#endif
#if NUM_INPUTS > 2
DESC(INPUT, 2)
#endif
#if NUM_INPUTS > 3
DESC(INPUT, 3)
#endif
#if NUM_INPUTS > 4
DESC(INPUT, 4)
#endif
#if NUM_INPUTS > 5
DESC(INPUT, 5)
#endif
#if NUM_INPUTS > 6
DESC(INPUT, 6)
#endif
#if NUM_INPUTS > 7
DESC(INPUT, 7)
#endif
#if NUM_OUTPUTS > 0
DESC(OUTPUT, 0)
#endif
#if NUM_OUTPUTS > 1
DESC(OUTPUT, 1)
#endif
#if NUM_OUTPUTS > 2
DESC(OUTPUT, 2)
#endif
#if NUM_OUTPUTS > 3
DESC(OUTPUT, 3)
#endif
#if NUM_OUTPUTS > 4
DESC(OUTPUT, 4)
#endif
#if NUM_OUTPUTS > 5
DESC(OUTPUT, 5)
#endif
#if NUM_OUTPUTS > 6
DESC(OUTPUT, 6)
#endif
#if NUM_OUTPUTS > 7
DESC(OUTPUT, 7)
#endif

static const tensor_desc *const inputs_desc[8] = {
#if NUM_INPUTS > 0
    &desc_INPUT_0,
#endif
#if NUM_INPUTS > 1
    &desc_INPUT_1,
#endif
#if NUM_INPUTS > 2
    &desc_INPUT_2,
#endif
#if NUM_INPUTS > 3
    &desc_INPUT_3,
#endif
#if NUM_INPUTS > 4
    &desc_INPUT_4,
#endif
#if NUM_INPUTS > 5
    &desc_INPUT_5,
#endif
#if NUM_INPUTS > 6
    &desc_INPUT_6,
#endif
#if NUM_INPUTS > 7
    &desc_INPUT_7,
#endif
    NULL};
static const tensor_desc *const outputs_desc[8] = {
#if NUM_OUTPUTS > 0
    &desc_OUTPUT_0,
#endif
#if NUM_OUTPUTS > 1
    &desc_OUTPUT_1,
#endif
#if NUM_OUTPUTS > 2
    &desc_OUTPUT_2,
#endif
#if NUM_OUTPUTS > 3
    &desc_OUTPUT_3,
#endif
#if NUM_OUTPUTS > 4
    &desc_OUTPUT_4,
#endif
#if NUM_OUTPUTS > 5
    &desc_OUTPUT_5,
#endif
#if NUM_OUTPUTS > 6
    &desc_OUTPUT_6,
#endif
#if NUM_OUTPUTS > 7
    &desc_OUTPUT_7,
#endif
    NULL};

/* numpy's dtype string for a KILN_DTYPE_* code (NULL: no numpy equivalent). */
static const char *npy_descr(int dtype) {
  switch (dtype) {
  case KILN_DTYPE_F32: return "<f4";
  case KILN_DTYPE_U8: return "|u1";
  case KILN_DTYPE_I8: return "|i1";
  case KILN_DTYPE_U16: return "<u2";
  case KILN_DTYPE_I16: return "<i2";
  case KILN_DTYPE_I32: return "<i4";
  case KILN_DTYPE_I64: return "<i8";
  case KILN_DTYPE_BOOL: return "|b1";
  case KILN_DTYPE_F16: return "<f2";
  case KILN_DTYPE_F64: return "<f8";
  case KILN_DTYPE_U32: return "<u4";
  case KILN_DTYPE_U64: return "<u8";
  default: return NULL;
  }
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL;
  size_t cap = 0, n = 0;
  if (!f) return NULL;
  for (;;) {
    size_t got;
    if (n == cap) {
      unsigned char *b = (unsigned char *)realloc(buf, cap ? 2 * cap : 1 << 16);
      if (!b) { free(buf); fclose(f); return NULL; }
      buf = b;
      cap = cap ? 2 * cap : 1 << 16;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  fclose(f);
  *len = n;
  return buf;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Loads input k from a .npy (dtype, order and size checked) or a raw file. */
static void *load_input(const char *path, int k, size_t want) {
  const tensor_desc *d = inputs_desc[k];
  size_t len = 0, off = 0;
  unsigned char *buf = read_file(path, &len);
  void *data;
  if (!buf) { fprintf(stderr, "cannot read '%s'\n", path); return NULL; }
  if (ends_with(path, ".npy")) {
    size_t hlen;
    char descr[16];
    const char *want_descr = npy_descr(d->dtype);
    char *header;
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) {
      fprintf(stderr, "'%s' is not a .npy file\n", path);
      free(buf);
      return NULL;
    }
    if (buf[6] == 1) { hlen = buf[8] | (size_t)buf[9] << 8; off = 10; }
    else if (len >= 12) { hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24; off = 12; }
    else { hlen = len; }
    if (off + hlen > len) { fprintf(stderr, "'%s': truncated header\n", path); free(buf); return NULL; }
    header = (char *)malloc(hlen + 1);
    if (!header) { free(buf); return NULL; }
    memcpy(header, buf + off, hlen);
    header[hlen] = 0;
    sprintf(descr, "'%s'", want_descr ? want_descr : "?");
    if (!want_descr || !strstr(header, descr) || strstr(header, "'fortran_order': True")) {
      fprintf(stderr, "input %d '%s': '%s' must hold %s in C order (header: %s)\n", k, d->name, path,
              want_descr ? want_descr : "a dtype .npy cannot express", header);
      free(header);
      free(buf);
      return NULL;
    }
    free(header);
    off += hlen;
  }
  if (len - off != want) {
    fprintf(stderr, "input %d '%s': '%s' holds %lu bytes, the model wants %lu\n", k, d->name, path,
            (unsigned long)(len - off), (unsigned long)want);
    free(buf);
    return NULL;
  }
  data = malloc(want ? want : 1);
  if (data) memcpy(data, buf + off, want);
  free(buf);
  return data;
}

/* Writes output k as OUTDIR/out_K.npy (format 1.0, header padded to 64 bytes). */
static int write_output(const char *dir, int k, const void *data, size_t size) {
  const tensor_desc *d = outputs_desc[k];
  const char *descr = npy_descr(d->dtype);
  char path[4096], shape[512] = "", header[640];
  size_t hlen, pad, used = 0;
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
  FILE *f;
  int i;
  if (!descr) descr = "|V1"; /* no numpy dtype: raw bytes */
  for (i = 0; i < d->rank && used < sizeof shape - 32; i++)
    used += (size_t)sprintf(shape + used, "%lu,%s", (unsigned long)d->dims[i], d->rank > 1 && i + 1 < d->rank ? " " : "");
  if (d->rank > 1) shape[used - 1] = 0; /* "(2, 3)" rather than "(2, 3,)" */
  hlen = (size_t)sprintf(header, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape);
  pad = 64 - (10 + hlen + 1) % 64;
  if (pad == 64) pad = 0;
  memset(header + hlen, ' ', pad);
  hlen += pad;
  header[hlen++] = '\n';
  pre[8] = (unsigned char)(hlen & 0xff);
  pre[9] = (unsigned char)(hlen >> 8);
  sprintf(path, "%.4000s/out_%d.npy", dir, k);
  f = fopen(path, "wb");
  if (!f || fwrite(pre, 1, 10, f) != 10 || fwrite(header, 1, hlen, f) != hlen ||
      fwrite(data, 1, size, f) != size) {
    fprintf(stderr, "cannot write '%s'\n", path);
    if (f) fclose(f);
    return 1;
  }
  return fclose(f) != 0;
}

static void summarize(int k, const void *data) {
  const tensor_desc *d = outputs_desc[k];
  size_t n = LOWER(_output_sizes)[k], i, show;
  printf("output %d '%s' (dtype %d, %d dims):", k, d->name, d->dtype, d->rank);
  if (d->dtype == KILN_DTYPE_F32) {
    const float *v = (const float *)data;
    size_t best = 0;
    n /= sizeof(float);
    show = n < 10 ? n : 10;
    for (i = 0; i < show; i++) printf(" %.6g", v[i]);
    for (i = 1; i < n; i++)
      if (v[i] > v[best]) best = i;
    printf("%s (argmax %lu)\n", n > show ? " ..." : "", (unsigned long)best);
  } else {
    printf(" %lu bytes\n", (unsigned long)n);
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  const void *ins[NUM_INPUTS + 1];
  void *outs[NUM_OUTPUTS + 1];
  const char *out_dir = ".";
  unsigned char *raw;
  void *arena;
  long runs = 1, r;
  int i, n_in = 0, status = 0;
  double t0, t1;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
      runs = strtol(argv[++i], NULL, 10);
      if (runs < 1) { fprintf(stderr, "-n wants a positive count\n"); return 2; }
    } else if (n_in < NUM_INPUTS) {
      void *p = load_input(argv[i], n_in, LOWER(_input_sizes)[n_in]);
      if (!p) return 1;
      ins[n_in++] = p;
    } else {
      fprintf(stderr, "usage: %s [-n RUNS] [-o OUTDIR] INPUT... (%d inputs)\n", argv[0], NUM_INPUTS);
      return 2;
    }
  }
  if (n_in != NUM_INPUTS) {
    fprintf(stderr, "model '%s' has %d inputs, got %d files\n", STR(KILN_MODEL), NUM_INPUTS, n_in);
    return 2;
  }
  for (i = 0; i < NUM_OUTPUTS; i++) {
    outs[i] = malloc(LOWER(_output_sizes)[i] ? LOWER(_output_sizes)[i] : 1);
    if (!outs[i]) return 1;
  }
  /* The arena: ARENA_SIZE bytes on an ARENA_ALIGN boundary (C99 has no aligned_alloc). */
  raw = (unsigned char *)malloc(UPPER(_ARENA_SIZE) + UPPER(_ARENA_ALIGN));
  if (!raw) return 1;
  arena = raw + (UPPER(_ARENA_ALIGN) - (uintptr_t)raw % UPPER(_ARENA_ALIGN));
  printf("model %s: %d inputs, %d outputs, arena %lu bytes; runtime %s, %d thread(s)\n",
         STR(KILN_MODEL), NUM_INPUTS, NUM_OUTPUTS, (unsigned long)UPPER(_ARENA_SIZE),
         kiln_runtime_version(), kiln_runtime_num_threads());
  t0 = now_s();
  for (r = 0; r < runs && status == 0; r++) status = LOWER(_run)(ins, outs, arena);
  t1 = now_s();
  if (status != 0) {
    fprintf(stderr, "%s_run returned %d\n", STR(KILN_MODEL), status);
    return 3;
  }
  if (runs > 1) printf("mean latency over %ld runs: %.3f ms\n", runs, 1e3 * (t1 - t0) / (double)runs);
  for (i = 0; i < NUM_OUTPUTS; i++) {
    summarize(i, outs[i]);
    if (write_output(out_dir, i, outs[i], LOWER(_output_sizes)[i])) return 1;
  }
  for (i = 0; i < NUM_INPUTS; i++) free((void *)ins[i]);
  for (i = 0; i < NUM_OUTPUTS; i++) free(outs[i]);
  free(raw);
  return 0;
}
