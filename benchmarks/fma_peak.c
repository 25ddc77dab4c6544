/* The CPU's fp32 multiply-add peak: 12 independent FMA chains per thread on the widest vectors the CPU has
 * (AVX-512, else AVX2/FMA), no memory traffic. No fp32 kernel can do more work per second than this; sgemm
 * readings (benchmarks/graph_flops.py) are what a library reaches below it. Also reads the clock from a chain of
 * dependent adds (one per cycle on every x86 core), so flop/cycle can be checked against the core's design.
 *
 * Usage: fma_peak THREADS; prints one JSON object. Built and run by fma_peak.py. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 12
#define ROUNDS 20000000L /* x 12 FMAs per thread: about 0.07 s at 3.5 GHz and one FMA per cycle */
#define REPEATS 5

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f"))) static float chains512(void) {
    __m512 acc[CHAINS], mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long r = 0; r < ROUNDS; r++)
#pragma GCC unroll 12  /* the chains must live in registers, not in the array */
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(acc[i]);
    return sum;
}

__attribute__((target("avx2,fma"))) static float chains256(void) {
    __m256 acc[CHAINS], mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long r = 0; r < ROUNDS; r++)
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
    float lanes[8], sum = 0;
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(lanes, acc[i]);
        for (int k = 0; k < 8; k++) sum += lanes[k];
    }
    return sum;
}

static int wide;  /* 1: AVX-512 */
static volatile float sink;

static void *worker(void *unused) {
    (void)unused;
    sink = wide ? chains512() : chains256();
    return NULL;
}

static double best_seconds(int threads) {
    double best = 1e30;
    pthread_t ids[256];
    for (int rep = 0; rep < REPEATS; rep++) {
        double start = now();
        for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, NULL);
        for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
        double took = now() - start;
        if (took < best) best = took;
    }
    return best;
}

static double clock_ghz(void) {
    const long adds = 300000000L;
    double best = 1e30;
    for (int rep = 0; rep < 9; rep++) { /* the fastest of several: a VM's steal time only ever slows a read */
        long x = 0;
        double start = now();
        for (long i = 0; i < adds; i++) __asm__ volatile("add $1, %0" : "+r"(x));
        double took = now() - start;
        if (took < best) best = took;
    }
    return adds / best / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "threads must be 1..256\n");
        return 2;
    }
    __builtin_cpu_init();
    wide = __builtin_cpu_supports("avx512f");
    if (!wide && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        fprintf(stderr, "this CPU has neither AVX-512 nor AVX2 with FMA\n");
        return 3;
    }
    int lanes = wide ? 16 : 8;
    double flop = 2.0 * lanes * CHAINS * ROUNDS;  /* per thread */
    double ghz = clock_ghz();
    double one = flop / best_seconds(1) / 1e9;
    double all = threads * flop / best_seconds(threads) / 1e9;
    printf("{\"isa\": \"%s\", \"vector_bits\": %d, \"threads\": %d, \"clock_ghz\": %.3f, "
           "\"gflops_one_thread\": %.2f, \"gflops\": %.2f, \"flop_per_cycle_one_thread\": %.2f}\n",
           wide ? "avx512f" : "avx2+fma", lanes * 32, threads, ghz, one, all, one / ghz);
    return 0;
}
