/* A stand-in for libnvidia-ml.so.1 with two fake GPUs, so the GPU telemetry path is tested
 * on machines without the NVIDIA driver. Only the calls adaptsched makes are exported. */
#include <string.h>

typedef void *nvmlDevice_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;

int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *count) { *count = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (index >= 2) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    *device = (nvmlDevice_t)(unsigned long)(index + 1);
    return 0;
}
int nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    strncpy(name, "Stub GPU 80GB", length);
    return 0;
}
int nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    strncpy(uuid, "GPU-stub", length);
    return 0;
}
int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    memory->total = 80000000000ULL;
    memory->reserved = 0;
    memory->used = 20000000000ULL * (unsigned long)device;
    memory->free = memory->total - memory->used;
    return 0;
}
int nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *rates) {
    rates->gpu = 40 * (unsigned int)(unsigned long)device;
    rates->memory = 10;
    return 0;
}
int nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *celsius) {
    *celsius = 50 + (unsigned int)(unsigned long)device;
    return 0;
}
int nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *milliwatts) {
    *milliwatts = 250000;
    return 0;
}
