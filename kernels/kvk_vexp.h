/* kvk_vexp.h — exp(x) for any vector ISA, from the v_* helpers of the including file.
 *
 * exp(x) = 2^n * 2^f with n = round(x log2 e), |f| <= 1/2; 2^f by its degree-7 Taylor
 * polynomial (relative error < 1e-8, below fp32 rounding). x <= -87 gives exactly 0, which
 * the online softmax relies on for keys it masked with -inf. The including file provides
 * v_round (to nearest), v_pow2n (multiply by 2^n, n integral in [-127, 127]) and
 * v_zero_below (zero the lanes where x <= limit); v_tanh also needs v_div. */
#ifndef KVARENA_KVK_VEXP_H
#define KVARENA_KVK_VEXP_H

#define KVK_EXP_LO (-87.0f)

static inline vf v_exp(vf x)
{
    vf xc = v_max(v_min(x, v_set1(88.0f)), v_set1(KVK_EXP_LO));
    vf t = v_mul(xc, v_set1(1.44269504088896341f));
    vf n = v_round(t), f = v_mul(v_sub(t, n), v_set1(0.693147180559945309f));
    /* e^f for |f| <= ln2 / 2, Horner */
    vf p = v_set1(1.0f / 5040);
    p = v_fma(p, f, v_set1(1.0f / 720));
    p = v_fma(p, f, v_set1(1.0f / 120));
    p = v_fma(p, f, v_set1(1.0f / 24));
    p = v_fma(p, f, v_set1(1.0f / 6));
    p = v_fma(p, f, v_set1(0.5f));
    p = v_fma(p, f, v_set1(1.0f));
    p = v_fma(p, f, v_set1(1.0f));
    return v_zero_below(v_pow2n(p, n), x, KVK_EXP_LO);
}

/* tanh(y) = 1 - 2 / (exp(2y) + 1): exactly +-1 far out (v_exp saturates), an absolute error
 * of a few 1e-8 near 0 (logit soft-capping scales it by the cap). */
static inline vf v_tanh(vf y)
{
    vf e = v_exp(v_add(y, y));
    return v_sub(v_set1(1.0f), v_div(v_set1(2.0f), v_add(e, v_set1(1.0f))));
}

#endif
