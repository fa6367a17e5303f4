"""The inference network as one compiled C function: the same equations, step and order as the
Brian2 inference build, without Brian2's per-step dispatch.

Why
---
The batched Brian2 engine (:func:`models.spiking.network.build_inference_net`) runs some 25 code
objects per time step, each called from Python and each unpacking its namespace; at the default
digits network that dispatch is about 200 microseconds per step whatever the batch, and the
populations are updated in separate passes over arrays too large for the cache (Brian2 profile and
batch-size sweep, 2-core AMD EPYC with AVX-512, 3 December 2026: ~22 % of the time at 100 copies;
the granule threshold pass alone was 18 %). Attacks ask many small questions (a few dozen images
per call), where that overhead dominates. Here one C function simulates one query at a time
(every population of one copy fits in the first-level cache), all steps of the window in a loop,
with OpenMP threads over the queries of a call.

What it computes
----------------
Per step, in Brian2's schedule order (``start``, ``groups``, ``thresholds``, ``synapses``,
``resets``), exactly the statements of the Brian2 build (its generated code was read for this):

1. at step 0 of a window every state variable is set to its start value (the steady state);
2. state updates: granule and Purkinje membranes by
   :func:`models.spiking.integrate.relax_step` (the same C source), Golgi cells and interneurons
   by the exponential-Euler expressions Brian2 2.9.0 generates for their linear equations;
3. thresholds: mossy fibre ``f`` spikes when ``mf_uniform(seed, slot, f, step) < dt * rate``
   (:mod:`models.spiking.noise`, the same C source), unless a spike-domain input overrides that
   step (``edits``: +1 a delivered spike, -1 a silenced fibre; explicit spike trains are rates of
   zero with +1 at every spike); the cells when ``v > v_th``;
4. synapses, in Brian2's name order: GoC -> GrC conductance, GrC -> GoC and MF -> GoC voltage jumps;
5. resets, in the Brian2 build's order (MF, GrC, GoC, MLI, PC): a mossy-fibre spike adds its
   EPSPs to its granule cells; a granule spike resets the cell, counts, and adds its PF-PC PSPs to
   every Purkinje cell and ``w_pf_mli`` to its interneurons; Golgi cells and interneurons reset
   with their AHP jump (an interneuron spike adds ``g_mli_pc u`` to its Purkinje cells); Purkinje
   spikes count from ``readout_start_ms`` on.

The granule state keeps the build's precision (``model.grc_state_dtype``); it is compiled with the
flags Brian2 compiles its own code with (``-O3 -ffast-math -fno-finite-math-only -march=native``),
so that the arithmetic is the same expression for expression. Agreement with the Brian2 build is
tested (identical spike counts on the same frozen noise) and printed by ``cereb bench spiking``.
Spike trains are recorded here too (:meth:`KernelNetwork.record`, one query at a time), identical
to the Brian2 build's ``SpikeMonitor`` (tested).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading

import numpy as np

from models.spiking import integrate, noise

log = logging.getLogger(__name__)

__all__ = ["KernelNetwork", "available"]

C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
""" + noise.CPP_CODE + integrate.CPP_CODE + r"""

/* ints: n_mf n_grc n_goc n_mli n_pc chunk_steps readout_steps */
enum { I_MF, I_GRC, I_GOC, I_MLI, I_PC, I_STEPS, I_READOUT, N_INTS };
/* consts */
enum { C_DT,
       C_GRC_B0, C_GRC_BG, C_GRC_Y0, C_GRC_YG, C_GRC_GDECAY, C_GRC_VTH, C_GRC_VRESET,
       C_GOC_TAU, C_GOC_TAU_AHP, C_GOC_DRIVE, C_GOC_VREST, C_GOC_VTH, C_GOC_VRESET, C_GOC_AHP,
       C_MLI_TAU, C_MLI_TAU_AHP, C_MLI_DRIVE, C_MLI_VREST, C_MLI_VTH, C_MLI_VRESET, C_MLI_AHP,
       C_PC_C, C_PC_EL, C_PC_EGABA, C_PC_GDECAY, C_PC_VTH, C_PC_VRESET,
       C_W_MF_GOC, C_W_GRC_GOC, C_G_GOC_GRC, C_W_PF_MLI, C_G_MLI_PC, N_CONSTS };
/* arrays */
enum { A_MFGRC_PTR, A_MFGRC_IDX, A_MFGRC_W, A_MFGOC_PTR, A_MFGOC_IDX, A_GRCGOC_PTR, A_GRCGOC_IDX,
       A_GOCGRC_PTR, A_GOCGRC_IDX, A_GRCMLI_PTR, A_GRCMLI_IDX, A_MLIPC_PTR, A_MLIPC_IDX, A_MLIPC_W,
       A_PF_WEFF, A_PC_DRIVE,
       A_GRC_V0, A_GRC_G0, A_GOC_V0, A_GOC_A0, A_MLI_V0, A_MLI_A0, A_PC_V0, A_PC_G0, N_ARRAYS };

/* spike indices of v[0..n) above vth, in increasing order: a vectorised any-test per block of 64 */
#define THRESHOLD(v, n, vth, out, count) do {                                              \
        int64_t b0_, b1_, j_;                                                              \
        for (b0_ = 0; b0_ < (n); b0_ += 64) {                                              \
            int any_ = 0;                                                                  \
            b1_ = b0_ + 64 < (n) ? b0_ + 64 : (n);                                         \
            for (j_ = b0_; j_ < b1_; j_++) any_ |= ((v)[j_] > (vth));                      \
            if (any_)                                                                      \
                for (j_ = b0_; j_ < b1_; j_++)                                             \
                    if ((v)[j_] > (vth)) (out)[(count)++] = (int32_t)j_;                   \
        }                                                                                  \
    } while (0)

typedef struct {
    GRC_T *grc_v, *grc_g; double *goc_v, *goc_a, *mli_v, *mli_a, *pc_v, *pc_g;
    int32_t *sp_mf, *sp_grc, *sp_goc, *sp_mli, *sp_pc;
} work_t;

/* spike trains of one query: per population (0 mf, 1 grc, 2 goc, 3 mli, 4 pc) the cell index and
   the step of every spike, in the order they occur (step, then index); overflow when a buffer is full */
typedef struct {
    int32_t *idx[5], *step[5];
    int64_t cap[5], len[5];
    int overflow;
} rec_t;

static inline void record(rec_t *rec, int p, const int32_t *sp, int64_t count, int64_t s)
{
    int64_t k;
    for (k = 0; k < count; k++) {
        if (rec->len[p] >= rec->cap[p]) { rec->overflow = 1; return; }
        rec->idx[p][rec->len[p]] = sp[k];
        rec->step[p][rec->len[p]] = (int32_t)s;
        rec->len[p]++;
    }
}

static int work_alloc(work_t *w, const int64_t *n)
{
    memset(w, 0, sizeof(*w));
    w->grc_v = malloc(sizeof(GRC_T) * (n[I_GRC] + 1)); w->grc_g = malloc(sizeof(GRC_T) * (n[I_GRC] + 1));
    w->goc_v = malloc(sizeof(double) * (n[I_GOC] + 1)); w->goc_a = malloc(sizeof(double) * (n[I_GOC] + 1));
    w->mli_v = malloc(sizeof(double) * (n[I_MLI] + 1)); w->mli_a = malloc(sizeof(double) * (n[I_MLI] + 1));
    w->pc_v = malloc(sizeof(double) * (n[I_PC] + 1)); w->pc_g = malloc(sizeof(double) * (n[I_PC] + 1));
    w->sp_mf = malloc(sizeof(int32_t) * (n[I_MF] + 1)); w->sp_grc = malloc(sizeof(int32_t) * (n[I_GRC] + 1));
    w->sp_goc = malloc(sizeof(int32_t) * (n[I_GOC] + 1)); w->sp_mli = malloc(sizeof(int32_t) * (n[I_MLI] + 1));
    w->sp_pc = malloc(sizeof(int32_t) * (n[I_PC] + 1));
    return w->grc_v && w->grc_g && w->goc_v && w->goc_a && w->mli_v && w->mli_a && w->pc_v && w->pc_g
           && w->sp_mf && w->sp_grc && w->sp_goc && w->sp_mli && w->sp_pc;
}

static void work_free(work_t *w)
{
    free(w->grc_v); free(w->grc_g); free(w->goc_v); free(w->goc_a); free(w->mli_v); free(w->mli_a);
    free(w->pc_v); free(w->pc_g); free(w->sp_mf); free(w->sp_grc); free(w->sp_goc); free(w->sp_mli); free(w->sp_pc);
}

/* Golgi cells and interneurons: Brian2 2.9.0's exponential-Euler code for
   dv/dt = (v_rest + drive - v - a) / tau, da/dt = -a / tau_ahp, with its loop invariants l1..l5 */
static inline void pacemaker_step(double *restrict v, double *restrict a, int64_t n, double l1, double l2,
                                  double l3, double l4, double l5)
{
    int64_t i;
    for (i = 0; i < n; i++) {
        const double av = a[i], vv = v[i];
        const double _a = l1 * av;
        const double _BA_v = l2 * (l3 + (l4 * (-av)));
        const double _v = (-_BA_v) + (l5 * (_BA_v + vv));
        a[i] = _a; v[i] = _v;
    }
}

/* One window of one query, from the start state; counts (may be NULL) are added to. */
static void simulate(const int64_t *n, const double *c, void *const *a, work_t *w, const double *rates,
                     const int8_t *edit, int64_t slot, int64_t seed, int32_t *cnt_grc, int32_t *cnt_goc,
                     int32_t *cnt_mli, int32_t *cnt_pc, rec_t *rec)
{
    const int64_t n_mf = n[I_MF], n_grc = n[I_GRC], n_goc = n[I_GOC], n_mli = n[I_MLI], n_pc = n[I_PC];
    const int64_t steps = n[I_STEPS], readout = n[I_READOUT];
    const int32_t *mfgrc_ptr = a[A_MFGRC_PTR], *mfgrc_idx = a[A_MFGRC_IDX];
    const double *mfgrc_w = a[A_MFGRC_W];
    const int32_t *mfgoc_ptr = a[A_MFGOC_PTR], *mfgoc_idx = a[A_MFGOC_IDX];
    const int32_t *grcgoc_ptr = a[A_GRCGOC_PTR], *grcgoc_idx = a[A_GRCGOC_IDX];
    const int32_t *gocgrc_ptr = a[A_GOCGRC_PTR], *gocgrc_idx = a[A_GOCGRC_IDX];
    const int32_t *grcmli_ptr = a[A_GRCMLI_PTR], *grcmli_idx = a[A_GRCMLI_IDX];
    const int32_t *mlipc_ptr = a[A_MLIPC_PTR], *mlipc_idx = a[A_MLIPC_IDX];
    const double *mlipc_w = a[A_MLIPC_W], *pf_weff = a[A_PF_WEFF], *pc_drive = a[A_PC_DRIVE];
    const double *grc_v0 = a[A_GRC_V0], *grc_g0 = a[A_GRC_G0], *goc_v0 = a[A_GOC_V0], *goc_a0 = a[A_GOC_A0];
    const double *mli_v0 = a[A_MLI_V0], *mli_a0 = a[A_MLI_A0], *pc_v0 = a[A_PC_V0], *pc_g0 = a[A_PC_G0];
    GRC_T *restrict grc_v = w->grc_v, *restrict grc_g = w->grc_g;
    double *restrict goc_v = w->goc_v, *restrict goc_a = w->goc_a;
    double *restrict mli_v = w->mli_v, *restrict mli_a = w->mli_a;
    double *restrict pc_v = w->pc_v, *restrict pc_g = w->pc_g;
    const double dt = c[C_DT];
    const double grc_b0 = c[C_GRC_B0], grc_bg = c[C_GRC_BG], grc_y0 = c[C_GRC_Y0], grc_yg = c[C_GRC_YG];
    const double grc_gdecay = c[C_GRC_GDECAY], grc_vth = c[C_GRC_VTH], grc_vreset = c[C_GRC_VRESET];
    /* the loop invariants of Brian2's exponential-Euler code for the pacemakers */
    const double goc_l1 = exp((-dt) / c[C_GOC_TAU_AHP]), goc_l2 = -c[C_GOC_TAU];
    const double goc_l3 = (c[C_GOC_DRIVE] / c[C_GOC_TAU]) + (c[C_GOC_VREST] / c[C_GOC_TAU]);
    const double goc_l4 = 1.0 / c[C_GOC_TAU], goc_l5 = exp((-dt) / c[C_GOC_TAU]);
    const double mli_l1 = exp((-dt) / c[C_MLI_TAU_AHP]), mli_l2 = -c[C_MLI_TAU];
    const double mli_l3 = (c[C_MLI_DRIVE] / c[C_MLI_TAU]) + (c[C_MLI_VREST] / c[C_MLI_TAU]);
    const double mli_l4 = 1.0 / c[C_MLI_TAU], mli_l5 = exp((-dt) / c[C_MLI_TAU]);
    const double pc_c = c[C_PC_C], pc_el = c[C_PC_EL], pc_egaba = c[C_PC_EGABA], pc_gdecay = c[C_PC_GDECAY];
    const double w_mf_goc = c[C_W_MF_GOC], w_grc_goc = c[C_W_GRC_GOC], g_goc_grc = c[C_G_GOC_GRC];
    const double w_pf_mli = c[C_W_PF_MLI], g_mli_pc = c[C_G_MLI_PC];
    const double goc_vth = c[C_GOC_VTH], mli_vth = c[C_MLI_VTH], pc_vth = c[C_PC_VTH];
    int32_t *restrict sp_mf = w->sp_mf, *restrict sp_grc = w->sp_grc, *restrict sp_goc = w->sp_goc;
    int32_t *restrict sp_mli = w->sp_mli, *restrict sp_pc = w->sp_pc;
    int64_t i, k, s;

    /* 1. the start state (the build's restart: v = v_init, in the build's precision) */
    for (i = 0; i < n_grc; i++) { grc_v[i] = grc_v0[i]; grc_g[i] = grc_g0[i]; }
    for (i = 0; i < n_goc; i++) { goc_v[i] = goc_v0[i]; goc_a[i] = goc_a0[i]; }
    for (i = 0; i < n_mli; i++) { mli_v[i] = mli_v0[i]; mli_a[i] = mli_a0[i]; }
    for (i = 0; i < n_pc; i++) { pc_v[i] = pc_v0[i]; pc_g[i] = pc_g0[i]; }

    for (s = 0; s < steps; s++) {
        /* 2. state updates */
        for (i = 0; i < n_grc; i++) {
            GRC_T g_goc = grc_g[i];
            GRC_T v = grc_v[i];
            v = relax_step(v, grc_b0 + (grc_bg * g_goc), grc_y0 + (grc_yg * g_goc));
            g_goc *= grc_gdecay;
            grc_g[i] = g_goc;
            grc_v[i] = v;
        }
        pacemaker_step(goc_v, goc_a, n_goc, goc_l1, goc_l2, goc_l3, goc_l4, goc_l5);
        pacemaker_step(mli_v, mli_a, n_mli, mli_l1, mli_l2, mli_l3, mli_l4, mli_l5);
        for (i = 0; i < n_pc; i++) {
            const double drive = pc_drive[i];
            double g_mli = pc_g[i];
            double v = pc_v[i];
            v = relax_step(v, pc_c * (pc_el + (drive + (pc_egaba * g_mli))), pc_c * (1.0 + g_mli));
            g_mli *= pc_gdecay;
            pc_g[i] = g_mli;
            pc_v[i] = v;
        }
        /* 3. thresholds (cells: a vectorised test per block of 64, then the block's indices in order) */
        int64_t n_sp_mf = 0, n_sp_grc = 0, n_sp_goc = 0, n_sp_mli = 0, n_sp_pc = 0;
        if (edit) {  /* spike-domain input: +1 a spike is delivered, -1 the fibre is silenced, 0 its Poisson draw */
            const int8_t *e = edit + s * n_mf;
            for (i = 0; i < n_mf; i++)
                if (e[i] > 0 || (e[i] == 0 && mf_uniform(seed, slot, i, s) < (dt * rates[i]))) sp_mf[n_sp_mf++] = (int32_t)i;
        } else {
            for (i = 0; i < n_mf; i++)
                if (mf_uniform(seed, slot, i, s) < (dt * rates[i])) sp_mf[n_sp_mf++] = (int32_t)i;
        }
        THRESHOLD(grc_v, n_grc, grc_vth, sp_grc, n_sp_grc);
        THRESHOLD(goc_v, n_goc, goc_vth, sp_goc, n_sp_goc);
        THRESHOLD(mli_v, n_mli, mli_vth, sp_mli, n_sp_mli);
        THRESHOLD(pc_v, n_pc, pc_vth, sp_pc, n_sp_pc);
        if (rec) {
            record(rec, 0, sp_mf, n_sp_mf, s); record(rec, 1, sp_grc, n_sp_grc, s);
            record(rec, 2, sp_goc, n_sp_goc, s); record(rec, 3, sp_mli, n_sp_mli, s);
            record(rec, 4, sp_pc, n_sp_pc, s);
        }
        /* 4. synapses (Brian2 order: goc_grc, grc_goc, mf_goc) */
        for (k = 0; k < n_sp_goc; k++) {
            const int32_t o = sp_goc[k];
            for (i = gocgrc_ptr[o]; i < gocgrc_ptr[o + 1]; i++) {
                GRC_T g_goc_post = grc_g[gocgrc_idx[i]];
                g_goc_post += g_goc_grc;
                grc_g[gocgrc_idx[i]] = g_goc_post;
            }
        }
        for (k = 0; k < n_sp_grc; k++) {
            const int32_t g = sp_grc[k];
            for (i = grcgoc_ptr[g]; i < grcgoc_ptr[g + 1]; i++) goc_v[grcgoc_idx[i]] += w_grc_goc;
        }
        for (k = 0; k < n_sp_mf; k++) {
            const int32_t f = sp_mf[k];
            for (i = mfgoc_ptr[f]; i < mfgoc_ptr[f + 1]; i++) goc_v[mfgoc_idx[i]] += w_mf_goc;
        }
        /* 5. resets: MF, GrC, GoC, MLI, PC */
        for (k = 0; k < n_sp_mf; k++) {
            const int32_t f = sp_mf[k];
            for (i = mfgrc_ptr[f]; i < mfgrc_ptr[f + 1]; i++) grc_v[mfgrc_idx[i]] += mfgrc_w[i];
        }
        for (k = 0; k < n_sp_grc; k++) {
            const int32_t g = sp_grc[k];
            const double *restrict wg = pf_weff + g * n_pc;
            grc_v[g] = grc_vreset;
            if (cnt_grc) cnt_grc[g] += 1;
            for (i = 0; i < n_pc; i++) pc_v[i] += wg[i];
            for (i = grcmli_ptr[g]; i < grcmli_ptr[g + 1]; i++) mli_v[grcmli_idx[i]] += w_pf_mli;
        }
        for (k = 0; k < n_sp_goc; k++) {
            const int32_t o = sp_goc[k];
            goc_v[o] = c[C_GOC_VRESET];
            goc_a[o] += c[C_GOC_AHP];
            if (cnt_goc) cnt_goc[o] += 1;
        }
        for (k = 0; k < n_sp_mli; k++) {
            const int32_t m = sp_mli[k];
            mli_v[m] = c[C_MLI_VRESET];
            mli_a[m] += c[C_MLI_AHP];
            if (cnt_mli) cnt_mli[m] += 1;
            for (i = mlipc_ptr[m]; i < mlipc_ptr[m + 1]; i++) pc_g[mlipc_idx[i]] += g_mli_pc * mlipc_w[i];
        }
        for (k = 0; k < n_sp_pc; k++) {
            const int32_t p = sp_pc[k];
            pc_v[p] = c[C_PC_VRESET];
            if (cnt_pc) cnt_pc[p] += (s >= readout);
        }
    }
}

/* n_queries windows, each from the start state; counts (n_queries, n_pop) must be zeroed; edits
   NULL or (n_queries, steps, n_mf) int8 (see simulate). Returns 0, or -1 when memory ran out. */
int cereb_run(const int64_t *n, const double *c, void *const *a, int64_t n_queries, const double *rates,
              const int8_t *edits, const int64_t *slots, int64_t seed, int32_t *cnt_grc, int32_t *cnt_goc, int32_t *cnt_mli,
              int32_t *cnt_pc, int threads)
{
    int failed = 0;
    int64_t q;
#ifdef _OPENMP
    #pragma omp parallel num_threads(threads > 0 ? threads : 1) reduction(|:failed)
#endif
    {
        work_t w;
        if (!work_alloc(&w, n)) {
            failed = 1;
        } else {
#ifdef _OPENMP
            #pragma omp for schedule(dynamic, 1)
#endif
            for (q = 0; q < n_queries; q++)
                simulate(n, c, a, &w, rates + q * n[I_MF], edits ? edits + q * n[I_STEPS] * n[I_MF] : NULL, slots[q], seed, cnt_grc + q * n[I_GRC],
                         cnt_goc + q * n[I_GOC], cnt_mli + q * n[I_MLI], cnt_pc + q * n[I_PC], NULL);
        }
        work_free(&w);
    }
    return failed ? -1 : 0;
}

/* One query with its spike trains: counts as cereb_run (zeroed by the caller); idx[p], step[p] of
   capacity cap[p] receive population p's spikes, len[p] their number. Returns 0, -1 when memory ran
   out, 1 when a buffer was too small (then nothing recorded is complete: call again with more). */
int cereb_record(const int64_t *n, const double *c, void *const *a, const double *rates, const int8_t *edit, int64_t slot,
                 int64_t seed, int32_t *cnt_grc, int32_t *cnt_goc, int32_t *cnt_mli, int32_t *cnt_pc,
                 int32_t *const *idx, int32_t *const *step, const int64_t *cap, int64_t *len)
{
    work_t w;
    rec_t rec;
    int p;
    if (!work_alloc(&w, n)) { work_free(&w); return -1; }
    for (p = 0; p < 5; p++) { rec.idx[p] = idx[p]; rec.step[p] = step[p]; rec.cap[p] = cap[p]; rec.len[p] = 0; }
    rec.overflow = 0;
    simulate(n, c, a, &w, rates, edit, slot, seed, cnt_grc, cnt_goc, cnt_mli, cnt_pc, &rec);
    for (p = 0; p < 5; p++) len[p] = rec.len[p];
    work_free(&w);
    return rec.overflow ? 1 : 0;
}

/* One window from the start state; writes the end state (double) to out (grc v, grc g, goc v, goc a,
   mli v, mli a, pc v, pc g, each of its population's length, back to back). */
int cereb_window_end(const int64_t *n, const double *c, void *const *a, const double *rates, int64_t slot,
                     int64_t seed, double *out)
{
    work_t w;
    int64_t i;
    if (!work_alloc(&w, n)) { work_free(&w); return -1; }
    simulate(n, c, a, &w, rates, NULL, slot, seed, NULL, NULL, NULL, NULL, NULL);
    for (i = 0; i < n[I_GRC]; i++) *out++ = w.grc_v[i];
    for (i = 0; i < n[I_GRC]; i++) *out++ = w.grc_g[i];
    for (i = 0; i < n[I_GOC]; i++) *out++ = w.goc_v[i];
    for (i = 0; i < n[I_GOC]; i++) *out++ = w.goc_a[i];
    for (i = 0; i < n[I_MLI]; i++) *out++ = w.mli_v[i];
    for (i = 0; i < n[I_MLI]; i++) *out++ = w.mli_a[i];
    for (i = 0; i < n[I_PC]; i++) *out++ = w.pc_v[i];
    for (i = 0; i < n[I_PC]; i++) *out++ = w.pc_g[i];
    work_free(&w);
    return 0;
}
"""

# the flags Brian2 2.9.0 compiles its generated code with (prefs.codegen.cpp.extra_compile_args_gcc)
FLAGS = ["-O3", "-ffast-math", "-fno-finite-math-only", "-march=native"]
_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}


def _machine_key() -> str:
    """The compiled code is specific to this CPU (``-march=native``): key it by the CPU's flags."""
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return platform.machine() + flags


def _compile(grc_dtype: str) -> ctypes.CDLL:
    from core.paths import cache_dir

    ctype = {"float32": "float", "float64": "double"}[grc_dtype]
    key = C_SOURCE + " ".join(FLAGS) + ctype + _machine_key() + "linked without -ffast-math"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = cache_dir("kernel")
    so = folder / f"cereb_{grc_dtype}_{digest}.so"
    if not so.exists():
        src = folder / f"cereb_{grc_dtype}_{digest}.c"
        tmp_src = src.with_suffix(f".c.{os.getpid()}.tmp")
        tmp_src.write_text(C_SOURCE)
        tmp_src.replace(src)
        tmp = so.with_suffix(f".so.{os.getpid()}.tmp")
        obj = so.with_suffix(f".o.{os.getpid()}.tmp")
        cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
        # compiled with Brian2's flags, linked without -ffast-math: linking with it would add
        # crtfastmath.o, which switches the whole process to flush-to-zero when the library loads
        res = None
        for omp in (["-fopenmp"], []):
            res = subprocess.run([cc, *FLAGS, *omp, f"-DGRC_T={ctype}", "-fPIC", "-c", str(src), "-o", str(obj)],
                                 capture_output=True, text=True)
            if res.returncode == 0:
                res = subprocess.run([cc, "-shared", *omp, str(obj), "-o", str(tmp), "-lm"], capture_output=True, text=True)
            if res.returncode == 0:
                break
            log.info("compiling the network kernel %s failed: %s", "with OpenMP" if omp else "", res.stderr.strip()[:200])
        obj.unlink(missing_ok=True)
        if res.returncode != 0:
            raise RuntimeError(f"compiling the network kernel failed: {res.stderr.strip()[:500]}")
        tmp.replace(so)  # atomic: a concurrent process sees either no file or a whole one
    lib = ctypes.CDLL(str(so))
    ptr = ctypes.c_void_p
    lib.cereb_run.argtypes = [ptr, ptr, ptr, ctypes.c_int64, ptr, ptr, ptr, ctypes.c_int64, ptr, ptr, ptr, ptr,
                              ctypes.c_int]
    lib.cereb_run.restype = ctypes.c_int
    lib.cereb_window_end.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_int64, ctypes.c_int64, ptr]
    lib.cereb_window_end.restype = ctypes.c_int
    lib.cereb_record.argtypes = [ptr, ptr, ptr, ptr, ptr, ctypes.c_int64, ctypes.c_int64, ptr, ptr, ptr, ptr, ptr, ptr,
                                 ptr, ptr]
    lib.cereb_record.restype = ctypes.c_int
    return lib


def _library(grc_dtype: str) -> ctypes.CDLL:
    with _lock:
        if grc_dtype not in _libs:
            _libs[grc_dtype] = _compile(grc_dtype)
        return _libs[grc_dtype]


def available() -> bool:
    """Whether the kernel can be compiled here (a C compiler on the PATH)."""
    try:
        _library("float32")
        return True
    except (RuntimeError, OSError) as exc:
        log.warning("the compiled network kernel is not available (%s): the Brian2 engine runs instead", exc)
        return False


class KernelNetwork:
    """One trained network, simulated query by query by the compiled kernel.

    The same interface as the engine's Brian2 networks: :meth:`run` returns per-population spike
    counts ``(n, n_cells)`` of ``n`` queries; :meth:`steady_state` the start of every presentation
    (:func:`models.spiking.network.steady_state`, computed by the kernel).
    """

    def __init__(self, cfg, conn, weights: np.ndarray, dt_ms: float, window_ms: float, threads: int = 1):
        from models.spiking.brian import get_brian2
        from models.spiking.network import _csr, _namespace, step_constants

        b2 = get_brian2()
        from core.device import usable_cores

        # never more OpenMP threads than cores this process may use (a pinned study job, a cluster slot)
        self.cfg, self.conn, self.threads = cfg, conn, max(1, min(int(threads), usable_cores()))
        self.dt_ms, self.window_ms = float(dt_ms), float(window_ms)
        self.lib = _library(cfg.grc_state_dtype)
        steps = int(round(window_ms / dt_ms))
        if abs(steps * dt_ms - window_ms) > 1e-9:
            raise ValueError(f"window_ms={window_ms} must be a whole number of steps of dt_ms={dt_ms}")
        readout = int(np.ceil(cfg.readout_start_ms / dt_ms - 1e-9))
        self.n = np.array([conn.n_mf, conn.n_grc, conn.n_goc, conn.n_mli, conn.n_pc, steps, readout], dtype=np.int64)
        # every constant as the Brian2 build sees it (its namespace, in SI units)
        ns = {**_namespace(b2, cfg), **step_constants(b2, cfg, dt_ms)}
        f = lambda name: float(ns[name])  # noqa: E731
        dt = float(dt_ms * b2.ms)
        self.c = np.array([
            dt,
            f("grc_b0"), f("grc_bg"), f("grc_y0"), f("grc_yg"), f("grc_gdecay"), f("grc_vth"), f("grc_vreset"),
            f("goc_tau"), f("goc_tau_ahp"), f("goc_drive"), f("goc_vrest"), f("goc_vth"), f("goc_vreset"), f("goc_ahp"),
            f("mli_tau"), f("mli_tau_ahp"), f("mli_drive"), f("mli_vrest"), f("mli_vth"), f("mli_vreset"), f("mli_ahp"),
            f("pc_c"), f("pc_el"), f("pc_egaba"), f("pc_gdecay"), f("pc_vth"), f("pc_vreset"),
            f("w_mf_goc"), f("w_grc_goc"), f("g_goc_grc"), cfg.w_pf_mli_mv * 1e-3, f("g_mli_pc"),
        ], dtype=np.float64)
        self._csr = _csr
        self._arrays: dict[str, np.ndarray] = {}
        ptr, idx, w = _csr(conn.mf_grc_i, conn.mf_grc_j, conn.n_mf, conn.mf_grc_w_mv * 1e-3)
        self._set(mfgrc_ptr=ptr, mfgrc_idx=idx, mfgrc_w=w)
        self.mf_grc_order = np.argsort(conn.mf_grc_i, kind="stable")
        for name, (i, j, n_pre) in {"mfgoc": (conn.mf_goc_i, conn.mf_goc_j, conn.n_mf),
                                    "grcgoc": (conn.grc_goc_i, conn.grc_goc_j, conn.n_grc),
                                    "gocgrc": (conn.goc_grc_i, conn.goc_grc_j, conn.n_goc),
                                    "grcmli": (conn.grc_mli_i, conn.grc_mli_j, conn.n_grc)}.items():
            p, ix, _ = _csr(np.asarray(i, np.int64), np.asarray(j, np.int64), n_pre)
            self._set(**{f"{name}_ptr": p, f"{name}_idx": ix})
        self.set_mli_pc_weights(conn.mli_pc_w)
        self.set_weights(weights)
        self._set(pc_drive=np.ascontiguousarray(conn.pc_drive_mv * 1e-3, dtype=np.float64))
        self.start: dict | None = None

    record_start_cap: int | None = None  # first buffer size per population in record() (None: 1/16 of the bound)

    ORDER = ("mfgrc_ptr", "mfgrc_idx", "mfgrc_w", "mfgoc_ptr", "mfgoc_idx", "grcgoc_ptr", "grcgoc_idx",
             "gocgrc_ptr", "gocgrc_idx", "grcmli_ptr", "grcmli_idx", "mlipc_ptr", "mlipc_idx", "mlipc_w",
             "pf_weff", "pc_drive", "grc_v0", "grc_g0", "goc_v0", "goc_a0", "mli_v0", "mli_a0", "pc_v0", "pc_g0")

    def _set(self, **arrays: np.ndarray) -> None:
        for name, arr in arrays.items():
            self._arrays[name] = np.ascontiguousarray(arr)

    def _pointers(self):
        missing = [k for k in self.ORDER if k not in self._arrays]
        if missing:
            raise RuntimeError(f"kernel network incomplete: {missing}")
        return (ctypes.c_void_p * len(self.ORDER))(*[self._arrays[k].ctypes.data for k in self.ORDER])

    # -- weights (the Brian2 networks' set_* counterparts)
    def set_weights(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.conn.n_grc, self.conn.n_pc):
            raise ValueError(f"weights must have shape {(self.conn.n_grc, self.conn.n_pc)}, got {w.shape}")
        self._set(pf_weff=self.cfg.j_pf_scaled_mv * 1e-3 * w.ravel())
        self.start = None

    def set_mf_grc_weights(self, w_mv: np.ndarray) -> None:
        self._set(mfgrc_w=np.asarray(w_mv, dtype=np.float64)[self.mf_grc_order] * 1e-3)
        self.start = None

    def set_mli_pc_weights(self, w: np.ndarray) -> None:
        p, ix, ww = self._csr(np.asarray(self.conn.mli_pc_i, np.int64), np.asarray(self.conn.mli_pc_j, np.int64),
                              self.conn.n_mli, np.asarray(w, dtype=np.float64))
        self._set(mlipc_ptr=p, mlipc_idx=ix, mlipc_w=ww)
        self.start = None

    def set_start(self, state: dict) -> None:
        self._set(**{f"{pop}_{var[0]}0": np.asarray(state[pop][var], dtype=np.float64)
                     for pop, names in (("grc", ("v", "g_goc")), ("goc", ("v", "a")), ("mli", ("v", "a")),
                                        ("pc", ("v", "g_mli"))) for var in names})
        self.start = state

    # -- simulation
    def steady_state(self, seed: int) -> dict:
        """:func:`models.spiking.network.steady_state` by the kernel: ``cfg.warmup_ms`` of background
        input from :func:`~models.spiking.network.initial_state`, window by window (noise slot
        ``WARMUP_SLOT + window``)."""
        from models.spiking.network import WARMUP_SLOT, initial_state

        if self.start is not None:
            return self.start
        cfg, conn = self.cfg, self.conn
        state = initial_state(cfg, conn, seed)
        n_windows = int(np.ceil(cfg.warmup_ms / self.window_ms - 1e-9))
        background = np.full(conn.n_mf, cfg.mf_rate_min_hz, dtype=np.float64)
        sizes = (conn.n_grc, conn.n_grc, conn.n_goc, conn.n_goc, conn.n_mli, conn.n_mli, conn.n_pc, conn.n_pc)
        keys = (("grc", "v"), ("grc", "g_goc"), ("goc", "v"), ("goc", "a"), ("mli", "v"), ("mli", "a"), ("pc", "v"),
                ("pc", "g_mli"))
        for w in range(n_windows):
            self.set_start(state)
            out = np.zeros(sum(sizes))
            rc = self.lib.cereb_window_end(self.n.ctypes.data, self.c.ctypes.data, self._pointers(),
                                           background.ctypes.data, (WARMUP_SLOT + w) % (2**31), int(seed) % (2**31),
                                           out.ctypes.data)
            if rc != 0:
                raise MemoryError("the network kernel could not allocate its state")
            state, at = {"grc": {}, "goc": {}, "mli": {}, "pc": {}}, 0
            for (pop, var), size in zip(keys, sizes):
                state[pop][var] = out[at:at + size].copy()
                at += size
        self.set_start(state)
        return state

    def _checked_rates(self, rates_hz: np.ndarray, what: str) -> np.ndarray:
        if self.start is None:
            raise RuntimeError(f"KernelNetwork.{what} before its start state was set")
        rates = np.ascontiguousarray(rates_hz, dtype=np.float64)
        if rates.ndim != 2 or rates.shape[1] != self.conn.n_mf:
            raise ValueError(f"rates must have shape (n, {self.conn.n_mf}), got {rates.shape}")
        return rates

    @property
    def n_steps(self) -> int:
        """Time steps of one window."""
        return int(self.n[5])

    def _checked_edits(self, edits, n: int):
        """``None`` or the ``(n, steps, n_mf)`` int8 spike-domain input (+1 deliver a spike, -1 silence
        the fibre, 0 its Poisson draw) as a contiguous array."""
        if edits is None:
            return None
        e = np.ascontiguousarray(edits, dtype=np.int8)
        if e.shape != (n, self.n_steps, self.conn.n_mf):
            raise ValueError(f"mossy-fibre edits must have shape {(n, self.n_steps, self.conn.n_mf)}, got {e.shape}")
        return e

    def run(self, rates_hz: np.ndarray, slots: np.ndarray, noise_seed: int, edits: np.ndarray | None = None
            ) -> tuple[dict, dict]:
        """Spike counts of ``len(rates_hz)`` queries, each from the start state (set by
        :meth:`set_start` or :meth:`steady_state`); ``slots`` their frozen-noise slots.

        ``edits`` (optional, ``(n, steps, n_mf)`` int8): the spike-domain input. At step ``s``
        mossy fibre ``f`` of query ``q`` spikes when ``edits[q, s, f] == +1``, is silent when it is
        ``-1`` and follows its Poisson draw at ``rates_hz[q, f]`` when it is ``0``: explicit spike
        trains are rates of zero with ``+1`` at every spike; experimenter's edits ride on the draw.
        """
        rates = self._checked_rates(rates_hz, "run")
        conn, n = self.conn, len(rates)
        edits = self._checked_edits(edits, n)
        slot = np.ascontiguousarray(np.asarray(slots, dtype=np.int64) % (2**31))
        counts = {pop: np.zeros((n, size), dtype=np.int32)
                  for pop, size in (("grc", conn.n_grc), ("goc", conn.n_goc), ("mli", conn.n_mli), ("pc", conn.n_pc))}
        rc = self.lib.cereb_run(self.n.ctypes.data, self.c.ctypes.data, self._pointers(), n, rates.ctypes.data,
                                None if edits is None else edits.ctypes.data, slot.ctypes.data, int(noise_seed) % (2**31), counts["grc"].ctypes.data,
                                counts["goc"].ctypes.data, counts["mli"].ctypes.data, counts["pc"].ctypes.data,
                                self.threads)
        if rc != 0:
            raise MemoryError("the network kernel could not allocate its state")
        return counts, {}

    def record(self, rates_hz: np.ndarray, slots: np.ndarray, noise_seed: int,
               pops: tuple[str, ...], edits: np.ndarray | None = None) -> tuple[dict, dict]:
        """As :meth:`run`, and the spike trains of populations ``pops``: population -> one ``(i, t_ms)``
        per query (time from the window's start, in whole steps; within a step by cell index), as
        the Brian2 build's ``SpikeMonitor`` gives them. One query at a time, on this thread."""
        rates = self._checked_rates(rates_hz, "record")
        conn, n = self.conn, len(rates)
        edits = self._checked_edits(edits, n)
        sizes = {"mf": conn.n_mf, "grc": conn.n_grc, "goc": conn.n_goc, "mli": conn.n_mli, "pc": conn.n_pc}
        steps = int(self.n[5])
        counts = {pop: np.zeros((n, sizes[pop]), dtype=np.int32) for pop in ("grc", "goc", "mli", "pc")}
        spikes: dict[str, list] = {pop: [] for pop in pops}
        start = self.record_start_cap
        cap = np.array([min(sizes[p] * steps, start or max(4096, sizes[p] * steps // 16)) for p in sizes], dtype=np.int64)
        for q in range(n):
            while True:
                idx = [np.zeros(int(c), dtype=np.int32) for c in cap]
                stp = [np.zeros(int(c), dtype=np.int32) for c in cap]
                ln = np.zeros(5, dtype=np.int64)
                one = {pop: np.zeros(sizes[pop], dtype=np.int32) for pop in counts}
                rc = self.lib.cereb_record(
                    self.n.ctypes.data, self.c.ctypes.data, self._pointers(), rates[q].ctypes.data,
                    None if edits is None else edits[q].ctypes.data, int(slots[q]) % (2**31), int(noise_seed) % (2**31), one["grc"].ctypes.data, one["goc"].ctypes.data,
                    one["mli"].ctypes.data, one["pc"].ctypes.data, (ctypes.c_void_p * 5)(*[a.ctypes.data for a in idx]),
                    (ctypes.c_void_p * 5)(*[a.ctypes.data for a in stp]), cap.ctypes.data, ln.ctypes.data)
                if rc == 0:
                    break
                if rc < 0:
                    raise MemoryError("the network kernel could not allocate its state")
                cap = np.minimum(cap * 4, np.array([sizes[p] * steps for p in sizes], dtype=np.int64))  # at most one spike per step
            for pop in counts:
                counts[pop][q] = one[pop]
            for p, pop in enumerate(sizes):
                if pop in spikes:
                    spikes[pop].append((idx[p][:ln[p]].copy(), stp[p][:ln[p]] * self.dt_ms))
        return counts, spikes
