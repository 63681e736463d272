/* Greedy generation in every mode through the C API, for comparing builds
 * (tests/test_cross_arch.py): prints "mode N: tokens..." per mode.
 *     generate_all_modes MODEL.gguf */
#include <stdio.h>

#include "nld.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    nld_model* model = NULL;
    nld_context* ctx = NULL;
    if (nld_model_load(argv[1], NULL, &model) != NLD_OK) {
        fprintf(stderr, "load failed: %s\n", nld_last_error());
        return 1;
    }
    nld_context_params cp = nld_context_default_params();
    cp.n_ctx = 256;
    cp.n_threads = 2;
    if (nld_context_create(model, &cp, &ctx) != NLD_OK) return 1;
    const int32_t prompt[8] = {5, 17, 33, 90, 120, 7, 64, 12};
    for (int mode = NLD_MODE_AR; mode <= NLD_MODE_AUTO; ++mode) {
        nld_generator* gen = NULL;
        nld_step step;
        nld_context_truncate(ctx, 0);
        nld_generate_params gp = nld_generate_default_params();
        gp.mode = mode;
        gp.max_new_tokens = 24;
        gp.ignore_eos = 1;
        if (nld_generator_create(ctx, prompt, 8, &gp, &gen) != NLD_OK) return 1;
        printf("mode %d:", mode);
        do {
            if (nld_generator_step(gen, &step) != NLD_OK) return 1;
            for (int i = 0; i < step.n_tokens; ++i) printf(" %d", step.tokens[i]);
        } while (step.finish_reason == NLD_FINISH_NONE);
        printf("\n");
        nld_generator_free(gen);
    }
    nld_context_free(ctx);
    nld_model_free(model);
    return 0;
}
