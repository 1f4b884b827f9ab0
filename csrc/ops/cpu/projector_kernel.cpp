// CPU kernels of matbp::projector_with_eig, matbp::projector_backward and
// matbp::projector_second_derivative:
// Pi_A = A A^+ for symmetric A (rank by a relative tolerance) and
// gA = sym((I - Pi) sym(G) A^+ + A^+ sym(G) (I - Pi)), formed in the
// eigenbasis of A. The code is device-generic (generic/projector.h).

#include <torch/library.h>

#include "../generic/projector.h"
#include "cpu_backend.h"
#include "../low_precision.h"

namespace matbp::ops::cpu {

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("projector_with_eig", widening<&generic::projector_with_eig<CpuBackend>>());
  m.impl("projector_backward", widening<&generic::projector_backward<CpuBackend>>());
  m.impl("projector_second_derivative",
         widening<&generic::projector_second_derivative<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
