// cuda_device.cu: what the CUDA runtime says about devices (compiled when the
// build finds nvcc, NLD_CUDA=AUTO|ON). The runtime is linked statically and
// loads the driver lazily, so a build with CUDA still loads, and answers
// "no device", on a machine without a GPU or a driver.
#include <cuda_runtime.h>

#include "backend/backend.h"

namespace nld {

int32_t cuda_device_count(const char** why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why) *why = cudaGetErrorString(e);
        return 0;
    }
    if (n == 0 && why) *why = "the CUDA runtime sees no device";
    return n;
}

}  // namespace nld
