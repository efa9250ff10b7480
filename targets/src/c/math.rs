//! The `kiln_math` section of every generated `.c`: freestanding scalar math
//! (no libm on firmware) and the integer helpers that give C the reference
//! interpreter's semantics. Float functions work in double and are accurate to
//! about 1e-15 relative, so an f32 result rounds like the interpreter's
//! (which also computes f32 functions in f64).

/// C source of the math and helper functions.
pub const PRELUDE: &str = r#"/* ---- kiln_math: freestanding math and interpreter-exact helpers ---- */
#if defined(__GNUC__)
#define KILN_NAN __builtin_nan("")
#define KILN_INF __builtin_inf()
#define KILN_UNUSED __attribute__((unused))
#else
#define KILN_NAN (0.0 / 0.0)
#define KILN_INF (1e300 * 1e300)
#define KILN_UNUSED
#endif
/* Full unrolling of small fixed-trip loops (kernel windows). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define KILN_STR(x) #x
#define KILN_UNROLL(n) _Pragma(KILN_STR(GCC unroll n))
#else
#define KILN_UNROLL(n)
#endif
#define KILN_LN2 0x1.62e42fefa39efp-1
#define KILN_PI 0x1.921fb54442d18p+1
#define KILN_PIO2 0x1.921fb54442d18p+0
static KILN_UNUSED int kiln_isnan(double x) { return x != x; }
static KILN_UNUSED int kiln_isinf(double x) { return x > DBL_MAX || x < -DBL_MAX; }
static KILN_UNUSED double kiln_fabs(double x) { return x < 0 ? -x : (x == 0 ? 0.0 : x); }
static KILN_UNUSED double kiln_trunc(double x) {
  if (kiln_isnan(x) || kiln_fabs(x) >= 4503599627370496.0) return x;
  return (double)(int64_t)x;
}
static KILN_UNUSED double kiln_floor(double x) {
  double t = kiln_trunc(x);
  return t > x ? t - 1.0 : t;
}
static KILN_UNUSED double kiln_ceil(double x) {
  double t = kiln_trunc(x);
  return t < x ? t + 1.0 : t;
}
static KILN_UNUSED double kiln_round_even(double x) {
  double r = kiln_floor(x), d;
  if (kiln_isnan(x) || kiln_isinf(x)) return x;
  d = x - r;
  if (d > 0.5 || (d == 0.5 && kiln_trunc(r * 0.5) * 2.0 != r)) r += 1.0;
  return r;
}
/* Newton from a bit-trick estimate: after one step the iterate is above the
   root and then decreases monotonically, so stop when it stops decreasing. */
static KILN_UNUSED double kiln_sqrt(double x) {
  union { double d; uint64_t u; } b;
  double g;
  int i;
  if (kiln_isnan(x) || x < 0) return KILN_NAN;
  if (x == 0 || kiln_isinf(x)) return x;
  b.d = x;
  b.u = (b.u >> 1) + ((uint64_t)1023 << 51);
  g = 0.5 * (b.d + x / b.d);
  for (i = 0; i < 2000; i++) {
    double n = 0.5 * (g + x / g);
    if (n >= g) break;
    g = n;
  }
  return g;
}
/* x * 2^k without overflow in the intermediate scale factors. */
static KILN_UNUSED double kiln_ldexp(double x, int k) {
  union { double d; uint64_t u; } s;
  while (k > 1000) { s.u = (uint64_t)(1023 + 1000) << 52; x *= s.d; k -= 1000; }
  while (k < -1000) { s.u = (uint64_t)(1023 - 1000) << 52; x *= s.d; k += 1000; }
  s.u = (uint64_t)(1023 + k) << 52;
  return x * s.d;
}
static KILN_UNUSED double kiln_exp(double x) {
  double k, r, p;
  int i;
  if (kiln_isnan(x)) return x;
  if (x > 709.8) return KILN_INF;
  if (x < -745.2) return 0.0;
  k = kiln_round_even(x / KILN_LN2);
  r = (x - k * 0x1.62e42fee00000p-1) - k * 0x1.a39ef35793c76p-33;
  p = 1.0;
  for (i = 14; i >= 1; i--) p = 1.0 + p * r / i;
  return kiln_ldexp(p, (int)k);
}
static KILN_UNUSED double kiln_log(double x) {
  union { double d; uint64_t u; } b;
  int e;
  double m, f, s, t, sum;
  int i;
  if (kiln_isnan(x) || x < 0) return KILN_NAN;
  if (x == 0) return -KILN_INF;
  if (kiln_isinf(x)) return x;
  e = 0;
  if (x < DBL_MIN) { x *= 18014398509481984.0; e = -54; }
  b.d = x;
  e += (int)((b.u >> 52) & 0x7ff) - 1023;
  b.u = (b.u & 0xfffffffffffffull) | ((uint64_t)1023 << 52);
  m = b.d;
  if (m > 0x1.6a09e667f3bcdp+0) { m *= 0.5; e += 1; }
  f = (m - 1.0) / (m + 1.0);
  s = f * f;
  sum = 0.0;
  for (i = 12; i >= 0; i--) sum = 1.0 / (2 * i + 1) + s * sum;
  t = 2.0 * f * sum;
  return e * 0x1.62e42fee00000p-1 + (e * 0x1.a39ef35793c76p-33 + t);
}
static KILN_UNUSED double kiln_log1p(double x) {
  double u = 1.0 + x;
  if (u == 1.0) return x;
  if (kiln_isinf(u)) return u;
  return kiln_log(u) * x / (u - 1.0);
}
/* sin and cos of r in [-pi/4, pi/4]. */
static KILN_UNUSED double kiln_sin_k(double r) {
  double s = r * r, p = 0.0;
  int i;
  for (i = 21; i >= 3; i -= 2) p = (1.0 - p) * s / ((double)i * (i - 1));
  return r * (1.0 - p);
}
static KILN_UNUSED double kiln_cos_k(double r) {
  double s = r * r, p = 0.0;
  int i;
  for (i = 22; i >= 2; i -= 2) p = (1.0 - p) * s / ((double)i * (i - 1));
  return 1.0 - p;
}
static KILN_UNUSED double kiln_sincos(double x, int want_cos) {
  double k, r;
  int q;
  if (kiln_isnan(x) || kiln_isinf(x)) return KILN_NAN;
  k = kiln_round_even(x / KILN_PIO2);
  r = ((x - k * 0x1.921fb54400000p+0) - k * 0x1.0b4611a600000p-34) - k * 0x1.3198a2e037073p-69;
  q = (int)((int64_t)kiln_fabs(k) % 4);
  if (k < 0) q = (4 - q) % 4;
  q = (q + want_cos) % 4;
  switch (q) {
    case 0: return kiln_sin_k(r);
    case 1: return kiln_cos_k(r);
    case 2: return -kiln_sin_k(r);
    default: return -kiln_cos_k(r);
  }
}
static KILN_UNUSED double kiln_sin(double x) { return kiln_sincos(x, 0); }
static KILN_UNUSED double kiln_cos(double x) { return kiln_sincos(x, 1); }
static KILN_UNUSED double kiln_tan(double x) { return kiln_sin(x) / kiln_cos(x); }
static KILN_UNUSED double kiln_atan(double x) {
  double a, off = 0.0, s, p;
  int neg = x < 0, inv, i;
  if (kiln_isnan(x)) return x;
  a = kiln_fabs(x);
  inv = a > 1.0;
  if (inv) a = 1.0 / a;
  if (a > 0x1.126145e9ecd56p-2) { /* tan(pi/12) */
    a = (a * 0x1.bb67ae8584caap+0 - 1.0) / (0x1.bb67ae8584caap+0 + a);
    off = KILN_PI / 6.0;
  }
  s = a * a;
  p = 0.0;
  for (i = 31; i >= 1; i -= 2) p = 1.0 / i - s * p;
  a = off + a * p;
  if (inv) a = KILN_PIO2 - a;
  return neg ? -a : a;
}
static KILN_UNUSED double kiln_asin(double x) {
  if (kiln_isnan(x) || x > 1 || x < -1) return KILN_NAN;
  if (x == 1 || x == -1) return x * KILN_PIO2;
  return kiln_atan(x / kiln_sqrt((1.0 - x) * (1.0 + x)));
}
static KILN_UNUSED double kiln_acos(double x) {
  if (kiln_isnan(x) || x > 1 || x < -1) return KILN_NAN;
  if (x == -1) return KILN_PI;
  return 2.0 * kiln_atan(kiln_sqrt((1.0 - x) / (1.0 + x)));
}
static KILN_UNUSED double kiln_sinh(double x) {
  double a = kiln_fabs(x), e;
  if (a < 0.5) {
    double s = x * x, p = 0.0;
    int i;
    for (i = 19; i >= 3; i -= 2) p = (1.0 + p) * s / ((double)i * (i - 1));
    return x * (1.0 + p);
  }
  if (a > 709.0) { e = kiln_exp(a * 0.5); e = 0.5 * e * e; return x < 0 ? -e : e; }
  e = kiln_exp(a);
  e = 0.5 * (e - 1.0 / e);
  return x < 0 ? -e : e;
}
static KILN_UNUSED double kiln_cosh(double x) {
  double a = kiln_fabs(x), e;
  if (kiln_isnan(x)) return x;
  if (a > 709.0) { e = kiln_exp(a * 0.5); return 0.5 * e * e; }
  e = kiln_exp(a);
  return 0.5 * (e + 1.0 / e);
}
static KILN_UNUSED double kiln_tanh(double x) {
  double a = kiln_fabs(x), e;
  if (kiln_isnan(x)) return x;
  if (a > 22.0) return x < 0 ? -1.0 : 1.0;
  if (a < 0.5) return kiln_sinh(x) / kiln_cosh(x);
  e = kiln_exp(2.0 * a);
  e = 1.0 - 2.0 / (e + 1.0);
  return x < 0 ? -e : e;
}
static KILN_UNUSED double kiln_asinh(double x) {
  double a = kiln_fabs(x), r;
  if (kiln_isnan(x) || kiln_isinf(x)) return x;
  if (a > 1e150) r = kiln_log(a) + KILN_LN2;
  else r = kiln_log1p(a + a * a / (1.0 + kiln_sqrt(1.0 + a * a)));
  return x < 0 ? -r : r;
}
static KILN_UNUSED double kiln_acosh(double x) {
  double t;
  if (kiln_isnan(x) || x < 1) return KILN_NAN;
  if (x > 1e150) return kiln_log(x) + KILN_LN2;
  t = x - 1.0;
  return kiln_log1p(t + kiln_sqrt(2.0 * t + t * t));
}
static KILN_UNUSED double kiln_atanh(double x) {
  if (kiln_isnan(x) || x > 1 || x < -1) return KILN_NAN;
  if (x == 1 || x == -1) return x * KILN_INF;
  return 0.5 * kiln_log1p(2.0 * x / (1.0 - x));
}
/* The reference interpreter's erf: Maclaurin series, then a continued fraction for erfc. */
static KILN_UNUSED double kiln_erf(double x) {
  double ax = kiln_fabs(x), r;
  if (kiln_isnan(x)) return x;
  if (ax < 2.5) {
    double sum = ax, term = ax, x2 = ax * ax, n = 0.0, add;
    for (;;) {
      n += 1.0;
      term *= -x2 / n;
      add = term / (2.0 * n + 1.0);
      sum += add;
      if (kiln_fabs(add) <= 1e-17 * kiln_fabs(sum)) break;
    }
    r = sum * 0x1.20dd750429b6dp+0;
  } else if (ax < 6.0) {
    double f = 0.0;
    int k;
    for (k = 59; k >= 1; k--) f = (k / 2.0) / (ax + f);
    r = 1.0 - kiln_exp(-ax * ax) / (ax + f) / 0x1.c5bf891b4ef6bp+0;
  } else {
    r = 1.0;
  }
  return x < 0 ? -r : r;
}
/* Exact remainder with the sign of the dividend (C fmod, Rust %). */
static KILN_UNUSED double kiln_fmod(double a, double b) {
  double r, bb;
  if (kiln_isnan(a) || kiln_isnan(b) || kiln_isinf(a) || b == 0) return KILN_NAN;
  if (kiln_isinf(b)) return a;
  r = kiln_fabs(a);
  bb = kiln_fabs(b);
  while (r >= bb) {
    double t = bb;
    while (t * 2.0 <= r && !kiln_isinf(t * 2.0)) t *= 2.0;
    r -= t;
  }
  return a < 0 ? -r : r;
}
static KILN_UNUSED double kiln_pow(double a, double b) {
  double r;
  int odd, bi;
  if (b == 0 || a == 1) return 1.0;
  if (kiln_isnan(a) || kiln_isnan(b)) return KILN_NAN;
  odd = kiln_fabs(b) < 9007199254740992.0 && kiln_trunc(b) == b && kiln_trunc(b * 0.5) * 2.0 != b;
  if (a == 0) {
    r = b < 0 ? KILN_INF : 0.0;
    return (odd && (1.0 / a) < 0) ? -r : r;
  }
  if (kiln_isinf(b)) {
    double m = kiln_fabs(a);
    if (m == 1) return 1.0;
    return (m > 1) == (b > 0) ? KILN_INF : 0.0;
  }
  if (a < 0 && kiln_trunc(b) != b) return KILN_NAN;
  if (kiln_isinf(a)) {
    r = b < 0 ? 0.0 : KILN_INF;
    return (a < 0 && odd) ? -r : r;
  }
  if (kiln_fabs(b) <= 64 && kiln_trunc(b) == b) {
    double base = kiln_fabs(a), acc = 1.0;
    bi = (int)kiln_fabs(b);
    while (bi) { if (bi & 1) acc *= base; base *= base; bi >>= 1; }
    r = b < 0 ? 1.0 / acc : acc;
  } else {
    r = kiln_exp(b * kiln_log(kiln_fabs(a)));
  }
  return (a < 0 && odd) ? -r : r;
}
static KILN_UNUSED double kiln_fmax(double a, double b) {
  if (kiln_isnan(a) || kiln_isnan(b)) return KILN_NAN;
  return a > b ? a : b;
}
static KILN_UNUSED double kiln_fmin(double a, double b) {
  if (kiln_isnan(a) || kiln_isnan(b)) return KILN_NAN;
  return a < b ? a : b;
}
/* Integers: the interpreter computes every integer type in i64, wrapping. */
static KILN_UNUSED int64_t kiln_iadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static KILN_UNUSED int64_t kiln_isub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static KILN_UNUSED int64_t kiln_imul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }
static KILN_UNUSED int64_t kiln_ineg(int64_t a) { return (int64_t)(0u - (uint64_t)a); }
static KILN_UNUSED int64_t kiln_iabs(int64_t a) { return a < 0 ? kiln_ineg(a) : a; }
static KILN_UNUSED int64_t kiln_idiv(int64_t a, int64_t b) {
  if (b == 0 || (b == -1 && a == INT64_MIN)) return 0;
  return a / b;
}
static KILN_UNUSED int64_t kiln_irem(int64_t a, int64_t b) {
  if (b == 0 || (b == -1 && a == INT64_MIN)) return 0;
  return a % b;
}
static KILN_UNUSED int64_t kiln_ipow(int64_t a, int64_t b) {
  uint64_t base = (uint64_t)a, acc = 1;
  if (b < 0) return a == 1 ? 1 : 0;
  if (b > 4294967295LL) b = 4294967295LL;
  while (b) { if (b & 1) acc *= base; base *= base; b >>= 1; }
  return (int64_t)acc;
}
static KILN_UNUSED int64_t kiln_shl(int64_t a, int64_t b) { return (b >= 0 && b < 64) ? (int64_t)((uint64_t)a << b) : 0; }
static KILN_UNUSED int64_t kiln_shr(int64_t a, int64_t b) {
  if (b < 0 || b >= 64) return 0;
  return a < 0 ? (int64_t)~(~(uint64_t)a >> b) : (int64_t)((uint64_t)a >> b);
}
static KILN_UNUSED int64_t kiln_imax(int64_t a, int64_t b) { return a > b ? a : b; }
static KILN_UNUSED int64_t kiln_imin(int64_t a, int64_t b) { return a < b ? a : b; }
/* Float to integer: truncate, saturate to [lo, hi], NaN gives 0. */
static KILN_UNUSED int64_t kiln_f2i(double x, double lo, double hi) {
  if (kiln_isnan(x)) return 0;
  x = kiln_trunc(x);
  if (x <= lo) x = lo;
  if (x >= hi) x = hi;
  if (x >= 9223372036854775808.0) return INT64_MAX;
  if (x <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)x;
}
static KILN_UNUSED int64_t kiln_f2u64(double x) {
  if (kiln_isnan(x) || x <= 0) return 0;
  if (x >= 18446744073709551616.0) return -1;
  if (x >= 9223372036854775808.0) return (int64_t)(uint64_t)x;
  return (int64_t)x;
}
static KILN_UNUSED void kiln_zero(void *p, size_t n) {
  unsigned char *c = (unsigned char *)p;
  while (n--) *c++ = 0;
}
static KILN_UNUSED void kiln_copy(void *d, const void *s, size_t n) {
  unsigned char *o = (unsigned char *)d;
  const unsigned char *i = (const unsigned char *)s;
  while (n--) *o++ = *i++;
}
/* ---- end kiln_math ---- */
"#;

/// Double-precision helpers of [`PRELUDE`] that have a single-precision twin
/// (same name plus `f`) in [`PRELUDE_F32`].
const F32_TWINS: &[&str] = &[
    "kiln_fabs",
    "kiln_fmax",
    "kiln_fmin",
    "kiln_floor",
    "kiln_ceil",
    "kiln_round_even",
    "kiln_exp",
    "kiln_tanh",
    "kiln_sqrt",
    "kiln_erf",
];

/// Whether the double helper `f` has a single-precision twin.
pub(crate) fn has_f32(f: &str) -> bool {
    F32_TWINS.contains(&f)
}

/// Single-precision math for cores whose FPU has no double arithmetic (an M4F
/// computing `exp` in double would call soft-float routines). Only the
/// functions found on hot paths have twins; the rest fall back to [`PRELUDE`].
pub const PRELUDE_F32: &str = r#"/* ---- kiln_math_f32: single-precision twins for cores without double FPU ---- */
static KILN_UNUSED int kiln_isnanf(float x) { return x != x; }
static KILN_UNUSED int kiln_isinff(float x) { return x > FLT_MAX || x < -FLT_MAX; }
static KILN_UNUSED float kiln_fabsf(float x) { return x < 0 ? -x : (x == 0 ? 0.0f : x); }
static KILN_UNUSED float kiln_fmaxf(float a, float b) {
  if (a != a || b != b) return (float)KILN_NAN;
  return a > b ? a : b;
}
static KILN_UNUSED float kiln_fminf(float a, float b) {
  if (a != a || b != b) return (float)KILN_NAN;
  return a < b ? a : b;
}
/* |x| >= 2^23 is already an integer (or NaN/inf). */
static KILN_UNUSED float kiln_truncf(float x) {
  if (!(kiln_fabsf(x) < 8388608.0f)) return x;
  return (float)(int32_t)x;
}
static KILN_UNUSED float kiln_floorf(float x) {
  float t = kiln_truncf(x);
  return t > x ? t - 1.0f : t;
}
static KILN_UNUSED float kiln_ceilf(float x) {
  float t = kiln_truncf(x);
  return t < x ? t + 1.0f : t;
}
static KILN_UNUSED float kiln_round_evenf(float x) {
  float r = kiln_floorf(x), d;
  if (!(kiln_fabsf(x) < 8388608.0f)) return x;
  d = x - r;
  if (d > 0.5f || (d == 0.5f && kiln_truncf(r * 0.5f) * 2.0f != r)) r += 1.0f;
  return r;
}
/* exp(x) = 2^k * exp(r), |r| <= ln2/2, with ln2 split so k*ln2_hi is exact;
   a degree-7 Taylor polynomial keeps the error within 2 ulp. */
static KILN_UNUSED float kiln_expf(float x) {
  union { float f; uint32_t u; } s;
  float r, p;
  int32_t k;
  if (x != x) return x;
  if (x > 88.72284f) return (float)KILN_INF;
  if (x < -103.97209f) return 0.0f;
  k = (int32_t)(x * 1.44269504f + (x < 0 ? -0.5f : 0.5f));
  r = (x - (float)k * 0x1.62e400p-1f) - (float)k * 0x1.7f7d1cp-20f;
  p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
      + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  if (k > 127) { s.u = (uint32_t)(127 + 127) << 23; p *= s.f; k -= 127; }
  if (k < -126) { s.u = (uint32_t)(127 - 126) << 23; p *= s.f; k += 126; }
  s.u = (uint32_t)(127 + k) << 23;
  return p * s.f;
}
/* tanh: an odd Taylor polynomial near 0 (where 1 - 2/(e^2x + 1) cancels),
   the exp form elsewhere; within 2 ulp. */
static KILN_UNUSED float kiln_tanhf(float x) {
  float a = kiln_fabsf(x), r;
  if (x != x) return x;
  if (a > 9.1f) return x < 0 ? -1.0f : 1.0f;
  if (a < 0.3f) {
    float s = x * x;
    return x + x * s * (-1.0f / 3 + s * (2.0f / 15 + s * (-17.0f / 315 + s * (62.0f / 2835
        + s * (-1382.0f / 155925 + s * (21844.0f / 6081075))))));
  }
  r = 1.0f - 2.0f / (kiln_expf(2.0f * a) + 1.0f);
  return x < 0 ? -r : r;
}
/* erf: its Maclaurin series below 0.5, else 1 - erfc with Abramowitz & Stegun
   7.1.26 (absolute error 1.5e-7, i.e. within a few ulp of erf >= 0.52). */
static KILN_UNUSED float kiln_erff(float x) {
  float a = kiln_fabsf(x), t, r;
  if (x != x) return x;
  if (a < 0.5f) {
    float s = x * x;
    return x * 1.12837917f * (1.0f + s * (-1.0f / 3 + s * (1.0f / 10 + s * (-1.0f / 42
        + s * (1.0f / 216 + s * (-1.0f / 1320 + s * (1.0f / 9360)))))));
  }
  if (a > 4.0f) return x < 0 ? -1.0f : 1.0f;
  t = 1.0f / (1.0f + 0.3275911f * a);
  r = 1.0f - t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f
      + t * (-1.453152027f + t * 1.061405429f)))) * kiln_expf(-a * a);
  return x < 0 ? -r : r;
}
/* The FPU's correctly rounded square root where there is one (the same result
   as the double routine rounded to float), else the double routine. */
static KILN_UNUSED float kiln_sqrtf(float x) {
#if defined(__GNUC__) && defined(__ARM_FP) && (__ARM_FP & 4) && defined(__thumb2__)
  float r;
  __asm__("vsqrt.f32 %0, %1" : "=t"(r) : "t"(x));
  return r;
#else
  return (float)kiln_sqrt((double)x);
#endif
}
/* ---- end kiln_math_f32 ---- */
"#;

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// The single-precision twins against the host's libm (in double), over
    /// [-6, 6] in steps of 1e-5: compiled with the host `cc`, which must exist.
    #[test]
    fn f32_twins_match_libm() {
        let dir = std::env::temp_dir().join(format!("kiln_mathf_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let src = format!(
            "#include <stdint.h>\n#include <stddef.h>\n#include <float.h>\n#include <math.h>\n#include <stdio.h>\n{}{}{}",
            super::PRELUDE,
            super::PRELUDE_F32,
            r#"
static double rel(double got, double want) { return want == 0 ? fabs(got) : fabs(got - want) / fabs(want); }
int main(void) {
  double w[4] = {0, 0, 0, 0};
  int i;
  for (i = -600000; i <= 600000; i++) {
    float x = (float)i * 1e-5f;
    double e;
    e = rel(kiln_expf(x), exp((double)x)); if (e > w[0]) w[0] = e;
    e = rel(kiln_tanhf(x), tanh((double)x)); if (e > w[1]) w[1] = e;
    e = rel(kiln_erff(x), erf((double)x)); if (e > w[2]) w[2] = e;
    if (x >= 0) { e = rel(kiln_sqrtf(x), sqrt((double)x)); if (e > w[3]) w[3] = e; }
  }
  printf("%g %g %g %g\n", w[0], w[1], w[2], w[3]);
  return 0;
}
"#
        );
        let c = dir.join("t.c");
        let exe = dir.join("t");
        std::fs::write(&c, src).expect("write");
        let out = Command::new("cc")
            .args(["-std=c99", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&exe)
            .arg(&c)
            .arg("-lm")
            .output()
            .expect("host C compiler 'cc' not found");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = Command::new(&exe).output().expect("run");
        let text = String::from_utf8_lossy(&run.stdout);
        let w: Vec<f64> = text
            .split_whitespace()
            .map(|t| t.parse().expect("number"))
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        // exp, tanh and sqrt within a few f32 ulp (6e-8); erf within about ten.
        for (name, got, max) in [
            ("exp", w[0], 3e-7),
            ("tanh", w[1], 3e-7),
            ("erf", w[2], 1e-6),
            ("sqrt", w[3], 1.2e-7),
        ] {
            assert!(got <= max, "{name}: max relative error {got} > {max}");
        }
    }
}
