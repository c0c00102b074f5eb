#include "emu.h"

#include <thread>
#include <vector>

thread_local Dim3 threadIdx, blockIdx, blockDim, gridDim;
thread_local Warp* emu_warp;

void emu_launch(int grid, int block, const std::function<void()>& body) {
    for (int b = 0; b < grid; b++) {
        for (int w = 0; w < block / 32; w++) {
            Warp warp;
            std::vector<std::thread> lanes;
            for (int l = 0; l < 32; l++) {
                lanes.emplace_back([&, l] {
                    threadIdx.x = w * 32 + l;
                    blockIdx.x = b;
                    blockDim.x = block;
                    gridDim.x = grid;
                    emu_warp = &warp;
                    body();
                });
            }
            for (auto& t : lanes) t.join();
        }
    }
}
