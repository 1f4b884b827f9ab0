#pragma once

// The one process-wide setting of the operators (configuration, not a check).

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace matbp::ops {

// Sync checks: CUDA kernels find per-matrix failures (NaN/Inf input, no
// convergence, outside a function's domain) on the device. By default they
// do not wait for the device to report them and fill the failed matrices'
// outputs with NaN instead; with sync checks on they synchronise and raise.
// Off unless MATBP_SYNC_CHECKS=1 at load time or set_sync_checks(true).
inline std::atomic<bool>& sync_checks_flag() {
  static std::atomic<bool> flag([] {
    const char* env = std::getenv("MATBP_SYNC_CHECKS");
    return env != nullptr && std::strcmp(env, "1") == 0;
  }());
  return flag;
}
inline bool sync_checks_enabled() { return sync_checks_flag().load(std::memory_order_relaxed); }
// Returns the previous setting.
inline bool set_sync_checks(bool enabled) { return sync_checks_flag().exchange(enabled); }

}  // namespace matbp::ops
