// Unit tests of the device-independent math in csrc/math/: divided differences
// of the spectral functions (divided_differences.h) and the K-matrix adjoint
// weights with their tie policy (adjoint_weights.h). These headers are the
// arithmetic the CUDA kernels run too (MATBP_HOST_DEVICE), and the build
// machines have no GPU, so these CPU tests are what covers it.
//
// References are hard-coded, computed with mpmath from the exact double value
// of each input literal (Python's float() and C++ parse a decimal literal to
// the same nearest double) and printed to 25 digits. Generating snippet:
//
//   from mpmath import mp, mpf
//   mp.dps = 800  # covers the 1e-300 gaps; mp.dps = 1000 prints the same digits
//   F = {'log': (mp.log, lambda x: 1 / x),
//        'sqrt': (mp.sqrt, lambda x: 1 / (2 * mp.sqrt(x))),
//        'exp': (mp.exp, mp.exp)}
//   def dd(fn, a, b, p=0.0):  # first divided difference f[a, b], f[a, a] = f'(a)
//       a, b = mpf(a), mpf(b)  # exact values of the doubles
//       f, df = F[fn] if fn != 'pow' else (lambda x: x ** mpf(p), lambda x: mpf(p) * x ** (mpf(p) - 1))
//       return df(a) if a == b else (f(a) - f(b)) / (a - b)
//   def ratio(kind, d, p=0.0):  # log1p(d)/d, expm1(d)/d, ((1+d)^p - 1)/d at the exact double d
//       d = mpf(d)
//       if d == 0: return mpf(p) if kind == 'powm1' else mpf(1)
//       return {'log1p': mp.log1p(d), 'expm1': mp.expm1(d),
//               'powm1': mp.expm1(mpf(p) * mp.log1p(d))}[kind] / d
//   print(mp.nstr(dd('log', 1.7, 1.7 * (1 + 1e-9)), 25))  # and so on for every row
//
// "threshold" rows sit on both sides of the series switch kSeriesThreshold =
// 1e-5 (relative gap (hi - lo) / lo for log and pow, absolute gap for exp):
// "series" rows have a gap just below it, "direct" rows just at or above it.
//
// Tolerance: 1e-14 relative (45 ulps) everywhere. On glibc the measured error
// of every row is at most 3.6 ulps (8e-16); 1e-14 leaves room for other libm
// implementations (CUDA's libdevice log1p/expm1/pow are within 2 ulps) while
// still catching any cancellation (a subtraction of close numbers loses 1e-3
// to 1e-15 relative at these gaps). DividedDifferencePow.FarApartLargeRatio
// and DividedDifferencePow.LargeMagnitudeNonDyadicExponent guard two pow
// regimes an earlier formula got wrong.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>

#include "math/adjoint_weights.h"
#include "math/divided_differences.h"

namespace {

namespace mm = matbp::math;
using Fn = mm::SpectralFn;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps = std::numeric_limits<double>::epsilon();
constexpr double kTol = 1e-14;

// |got - want| / |want|; 0 when both are the same value (infinities included),
// infinite for a NaN or a wrong infinity.
double relative_error(double got, double want) {
  if (got == want) return 0.0;
  if (!std::isfinite(got) || !std::isfinite(want)) return kInf;
  if (want == 0.0) return std::abs(got) / std::numeric_limits<double>::min();
  return std::abs(got - want) / std::abs(want);
}

bool same_bits(double x, double y) { return std::memcmp(&x, &y, sizeof x) == 0; }

const char* fn_name(Fn fn) {
  switch (fn) {
    case Fn::Log:
      return "log";
    case Fn::Sqrt:
      return "sqrt";
    case Fn::Pow:
      return "pow";
    case Fn::Exp:
      return "exp";
  }
  return "?";
}

struct DDCase {
  Fn fn;
  double a, b, p;
  double ref;
  const char* what;
};

std::string describe(const DDCase& c, double got) {
  std::ostringstream s;
  s.precision(17);
  s << fn_name(c.fn) << "[a, b] (" << c.what << ") a=" << c.a << " b=" << c.b;
  if (c.fn == Fn::Pow) s << " p=" << c.p;
  s << ": got " << got << ", want " << c.ref << ", relative error "
    << relative_error(got, c.ref) << " (" << relative_error(got, c.ref) / kEps << " ulps)";
  return s.str();
}

// {fn, a, b, p, f[a, b] to 25 digits, what}
const DDCase kCases[] = {
    {Fn::Log, 1.0, 2.0, 0.0, 6.931471805599453094172321e-1, "far"},
    {Fn::Log, 0.25, 9.0, 0.0, 4.09545021537841143042852e-1, "far"},
    {Fn::Log, 3.0, 7.0, 0.0, 2.118244650968009034275269e-1, "far"},
    {Fn::Log, 0.1, 0.3, 0.0, 5.493061443340548451772546, "far"},
    {Fn::Log, 1.7, 1.7016999999999998, 0.0, 5.879413724020783811175992e-1, "close 0.001"},
    {Fn::Log, 1.7, 1.7000016999999998, 0.0, 5.882350000001961140051478e-1, "close 1e-06"},
    {Fn::Log, 1.7, 1.7000000017, 0.0, 5.882352938235294029917897e-1, "close 1e-09"},
    {Fn::Log, 1.7, 1.7000000000017002, 0.0, 5.88235294117352922712445e-1, "close 1e-12"},
    {Fn::Log, 1.7, 1.7000000000000017, 0.0, 5.882352941176467668617652e-1, "close 1e-15"},
    {Fn::Log, 1.7, 1.7, 0.0, 5.882352941176470741899381e-1, "equal"},
    {Fn::Log, 0.3, 0.30029999999999996, 0.0, 3.331667776945110862578615, "close 0.001"},
    {Fn::Log, 0.3, 0.30000029999999994, 0.0, 3.333331666667778160771265, "close 1e-06"},
    {Fn::Log, 0.3, 0.3000000003, 0.0, 3.333333331666666653235273, "close 1e-09"},
    {Fn::Log, 0.3, 0.3000000000003, 0.0, 3.333333333331666580178087, "close 1e-12"},
    {Fn::Log, 0.3, 0.3000000000000003, 0.0, 3.333333333333331606319739, "close 1e-15"},
    {Fn::Log, 0.3, 0.3, 0.0, 3.333333333333333456691447, "equal"},
    {Fn::Log, 1.0, 1.0000099999999998, 0.0, 9.999950000333331616005721e-1, "threshold series"},
    {Fn::Log, 1.0, 1.00001, 0.0, 9.999950000333330505797499e-1, "threshold direct"},
    {Fn::Log, 1.0, 1.000009, 0.0, 9.9999550002699985488383e-1, "threshold series"},
    {Fn::Log, 1.0, 1.000011, 0.0, 9.999945000403330089634375e-1, "threshold direct"},
    {Fn::Log, 1.7, 1.700017, 0.0, 5.882323529607841934985154e-1, "threshold series"},
    {Fn::Log, 1.7, 1.7000170000000001, 0.0, 5.88232352960784155083006e-1, "threshold direct"},
    {Fn::Log, 1.7, 1.7000152999999998, 0.0, 5.882326470747058200398707e-1, "threshold series"},
    {Fn::Log, 1.7, 1.7000187, 0.0, 5.882320588472547149965654e-1, "threshold direct"},
    {Fn::Sqrt, 1.0, 2.0, 0.0, 4.142135623730950488016887e-1, "far"},
    {Fn::Sqrt, 0.25, 9.0, 0.0, 2.857142857142857142857143e-1, "far"},
    {Fn::Sqrt, 3.0, 7.0, 0.0, 2.284251258739283242435424e-1, "far"},
    {Fn::Sqrt, 0.1, 0.3, 0.0, 1.157473957441640903104535, "far"},
    {Fn::Sqrt, 1.7, 1.7016999999999998, 0.0, 3.833866717054525018197056e-1, "close 0.001"},
    {Fn::Sqrt, 1.7, 1.7000016999999998, 0.0, 3.834823985531095595089903e-1, "close 1e-06"},
    {Fn::Sqrt, 1.7, 1.7000000017, 0.0, 3.834824943278145920233601e-1, "close 1e-09"},
    {Fn::Sqrt, 1.7, 1.7000000000017002, 0.0, 3.834824944235893418627387e-1, "close 1e-12"},
    {Fn::Sqrt, 1.7, 1.7000000000000017, 0.0, 3.834824944236851233369889e-1, "close 1e-15"},
    {Fn::Sqrt, 1.7, 1.7, 0.0, 3.834824944236852235137171e-1, "equal"},
    {Fn::Sqrt, 0.3, 0.30029999999999996, 0.0, 9.126428254805810693201231e-1, "close 0.001"},
    {Fn::Sqrt, 0.3, 0.30000029999999994, 0.0, 9.128707009576587232948993e-1, "close 1e-06"},
    {Fn::Sqrt, 0.3, 0.3000000003, 0.0, 9.128709289470591215905915e-1, "close 1e-09"},
    {Fn::Sqrt, 0.3, 0.3000000000003, 0.0, 9.12870929175048626186386e-1, "close 1e-12"},
    {Fn::Sqrt, 0.3, 0.3000000000000003, 0.0, 9.128709291752766192805407e-1, "close 1e-15"},
    {Fn::Sqrt, 0.3, 0.3, 0.0, 9.128709291752768726531217e-1, "equal"},
    {Fn::Sqrt, 1.0, 1.0000099999999998, 0.0, 4.999987500062499805041484e-1, "threshold series"},
    {Fn::Sqrt, 1.0, 1.00001, 0.0, 4.999987500062499527488503e-1, "threshold direct"},
    {Fn::Sqrt, 1.0, 1.000009, 0.0, 4.999988750050624808067742e-1, "threshold series"},
    {Fn::Sqrt, 1.0, 1.000011, 0.0, 4.999986250075624501025145e-1, "threshold direct"},
    {Fn::Sqrt, 1.7, 1.700017, 0.0, 3.834815357222426692585245e-1, "threshold series"},
    {Fn::Sqrt, 1.7, 1.7000170000000001, 0.0, 3.834815357222426567365587e-1, "threshold direct"},
    {Fn::Sqrt, 1.7, 1.7000152999999998, 0.0, 3.834816315919555182618449e-1, "threshold series"},
    {Fn::Sqrt, 1.7, 1.7000187, 0.0, 3.834814398526256890812727e-1, "threshold direct"},
    {Fn::Pow, 1.0, 2.0, 0.5, 4.142135623730950488016887e-1, "far"},
    {Fn::Pow, 0.25, 9.0, 0.5, 2.857142857142857142857143e-1, "far"},
    {Fn::Pow, 3.0, 7.0, 0.5, 2.284251258739283242435424e-1, "far"},
    {Fn::Pow, 0.1, 0.3, 0.5, 1.157473957441640903104535, "far"},
    {Fn::Pow, 1.7, 1.7016999999999998, 0.5, 3.833866717054525018197056e-1, "close 0.001"},
    {Fn::Pow, 1.7, 1.7000016999999998, 0.5, 3.834823985531095595089903e-1, "close 1e-06"},
    {Fn::Pow, 1.7, 1.7000000017, 0.5, 3.834824943278145920233601e-1, "close 1e-09"},
    {Fn::Pow, 1.7, 1.7000000000017002, 0.5, 3.834824944235893418627387e-1, "close 1e-12"},
    {Fn::Pow, 1.7, 1.7000000000000017, 0.5, 3.834824944236851233369889e-1, "close 1e-15"},
    {Fn::Pow, 1.7, 1.7, 0.5, 3.834824944236852235137171e-1, "equal"},
    {Fn::Pow, 0.3, 0.30029999999999996, 0.5, 9.126428254805810693201231e-1, "close 0.001"},
    {Fn::Pow, 0.3, 0.30000029999999994, 0.5, 9.128707009576587232948993e-1, "close 1e-06"},
    {Fn::Pow, 0.3, 0.3000000003, 0.5, 9.128709289470591215905915e-1, "close 1e-09"},
    {Fn::Pow, 0.3, 0.3000000000003, 0.5, 9.12870929175048626186386e-1, "close 1e-12"},
    {Fn::Pow, 0.3, 0.3000000000000003, 0.5, 9.128709291752766192805407e-1, "close 1e-15"},
    {Fn::Pow, 0.3, 0.3, 0.5, 9.128709291752768726531217e-1, "equal"},
    {Fn::Pow, 1.0, 1.0000099999999998, 0.5, 4.999987500062499805041484e-1, "threshold series"},
    {Fn::Pow, 1.0, 1.00001, 0.5, 4.999987500062499527488503e-1, "threshold direct"},
    {Fn::Pow, 1.0, 1.000009, 0.5, 4.999988750050624808067742e-1, "threshold series"},
    {Fn::Pow, 1.0, 1.000011, 0.5, 4.999986250075624501025145e-1, "threshold direct"},
    {Fn::Pow, 1.7, 1.700017, 0.5, 3.834815357222426692585245e-1, "threshold series"},
    {Fn::Pow, 1.7, 1.7000170000000001, 0.5, 3.834815357222426567365587e-1, "threshold direct"},
    {Fn::Pow, 1.7, 1.7000152999999998, 0.5, 3.834816315919555182618449e-1, "threshold series"},
    {Fn::Pow, 1.7, 1.7000187, 0.5, 3.834814398526256890812727e-1, "threshold direct"},
    {Fn::Pow, 1.0, 2.0, -1.5, -6.464466094067262377995778e-1, "far"},
    {Fn::Pow, 0.25, 9.0, -1.5, -9.100529100529100529100529e-1, "far"},
    {Fn::Pow, 3.0, 7.0, -1.5, -3.461379125356784130857728e-2, "far"},
    {Fn::Pow, 0.1, 0.3, -1.5, -1.276848520359097338516811e+2, "far"},
    {Fn::Pow, 1.7, 1.7016999999999998, -1.5, -3.975816954212806995582407e-1, "close 0.001"},
    {Fn::Pow, 1.7, 1.7000016999999998, -1.5, -3.980782163368095070498545e-1, "close 1e-06"},
    {Fn::Pow, 1.7, 1.7000000017, -1.5, -3.980787134370229270763115e-1, "close 1e-09"},
    {Fn::Pow, 1.7, 1.7000000000017002, -1.5, -3.980787139341237044576173e-1, "close 1e-12"},
    {Fn::Pow, 1.7, 1.7000000000000017, -1.5, -3.98078713934620840137116e-1, "close 1e-15"},
    {Fn::Pow, 1.7, 1.7, -1.5, -3.980787139346213600855322e-1, "equal"},
    {Fn::Pow, 0.3, 0.30029999999999996, -1.5, -3.039103900959599374712253e+1, "close 0.001"},
    {Fn::Pow, 0.3, 0.30000029999999994, -1.5, -3.042899293626489726869782e+1, "close 1e-06"},
    {Fn::Pow, 0.3, 0.3000000003, -1.5, -3.042903093447293952224061e+1, "close 1e-09"},
    {Fn::Pow, 0.3, 0.3000000000003, -1.5, -3.042903097247119026284885e+1, "close 1e-12"},
    {Fn::Pow, 0.3, 0.3000000000000003, -1.5, -3.042903097250918911187461e+1, "close 1e-15"},
    {Fn::Pow, 0.3, 0.3, -1.5, -3.042903097250923134063811e+1, "equal"},
    {Fn::Pow, 1.0, 1.0000099999999998, -1.5, -1.499981250218747832581281, "threshold series"},
    {Fn::Pow, 1.0, 1.00001, -1.5, -1.499981250218747416257361, "threshold direct"},
    {Fn::Pow, 1.0, 1.000009, -1.5, -1.499983125177185845240012, "threshold series"},
    {Fn::Pow, 1.0, 1.000011, -1.5, -1.499979375264684255945885, "threshold direct"},
    {Fn::Pow, 1.7, 1.700017, -1.5, -3.980737380087496894055306e-1, "threshold series"},
    {Fn::Pow, 1.7, 1.7000170000000001, -1.5, -3.98073738008749624413495e-1, "threshold direct"},
    {Fn::Pow, 1.7, 1.7000152999999998, -1.5, -3.980742355961122175272602e-1, "threshold series"},
    {Fn::Pow, 1.7, 1.7000187, -1.5, -3.980732404225481850145763e-1, "threshold direct"},
    {Fn::Pow, 1.0, 2.0, 2.0, 3.0, "far"},
    {Fn::Pow, 0.25, 9.0, 2.0, 9.25, "far"},
    {Fn::Pow, 3.0, 7.0, 2.0, 1.0e+1, "far"},
    {Fn::Pow, 0.1, 0.3, 2.0, 3.999999999999999944488849e-1, "far"},
    {Fn::Pow, 1.7, 1.7016999999999998, 2.0, 3.401699999999999723954147, "close 0.001"},
    {Fn::Pow, 1.7, 1.7000016999999998, 2.0, 3.400001699999999793533334, "close 1e-06"},
    {Fn::Pow, 1.7, 1.7000000017, 2.0, 3.400000001700000051840789, "close 1e-09"},
    {Fn::Pow, 1.7, 1.7000000000017002, 2.0, 3.400000000001700106722069, "close 1e-12"},
    {Fn::Pow, 1.7, 1.7000000000000017, 2.0, 3.400000000000001687538997, "close 1e-15"},
    {Fn::Pow, 1.7, 1.7, 2.0, 3.399999999999999911182158, "equal"},
    {Fn::Pow, 0.3, 0.30029999999999996, 2.0, 6.002999999999999447553023e-1, "close 0.001"},
    {Fn::Pow, 0.3, 0.30000029999999994, 2.0, 6.000002999999999309110876e-1, "close 1e-06"},
    {Fn::Pow, 0.3, 0.3000000003, 2.0, 6.000000003000000026176508e-1, "close 1e-09"},
    {Fn::Pow, 0.3, 0.3000000000003, 2.0, 6.000000000003000155679445e-1, "close 1e-12"},
    {Fn::Pow, 0.3, 0.3000000000000003, 2.0, 6.000000000000003108624469e-1, "close 1e-15"},
    {Fn::Pow, 0.3, 0.3, 2.0, 5.999999999999999777955395e-1, "equal"},
    {Fn::Pow, 1.0, 1.0000099999999998, 2.0, 2.000009999999999843467435, "threshold series"},
    {Fn::Pow, 1.0, 1.00001, 2.0, 2.00001000000000006551204, "threshold direct"},
    {Fn::Pow, 1.0, 1.000009, 2.0, 2.000008999999999925734073, "threshold series"},
    {Fn::Pow, 1.0, 1.000011, 2.0, 2.000010999999999983245402, "threshold direct"},
    {Fn::Pow, 1.7, 1.700017, 2.0, 3.400016999999999844916942, "threshold series"},
    {Fn::Pow, 1.7, 1.7000170000000001, 2.0, 3.400017000000000066961547, "threshold direct"},
    {Fn::Pow, 1.7, 1.7000152999999998, 2.0, 3.400015299999999740521162, "threshold series"},
    {Fn::Pow, 1.7, 1.7000187, 2.0, 3.400018699999999949312723, "threshold direct"},
    {Fn::Pow, 1.0, 2.0, 3.0, 7.0, "far"},
    {Fn::Pow, 0.25, 9.0, 3.0, 8.33125e+1, "far"},
    {Fn::Pow, 3.0, 7.0, 3.0, 7.9e+1, "far"},
    {Fn::Pow, 0.1, 0.3, 3.0, 1.299999999999999950039964e-1, "far"},
    {Fn::Pow, 1.7, 1.7016999999999998, 3.0, 8.67867288999999859130309, "close 0.001"},
    {Fn::Pow, 1.7, 1.7000016999999998, 3.0, 8.670008670002888947019377, "close 1e-06"},
    {Fn::Pow, 1.7, 1.7000000017, 3.0, 8.670000008670000267278023, "close 1e-09"},
    {Fn::Pow, 1.7, 1.7000000000017002, 3.0, 8.670000000008670544282555, "close 1e-12"},
    {Fn::Pow, 1.7, 1.7000000000000017, 3.0, 8.670000000000008606448887, "close 1e-15"},
    {Fn::Pow, 1.7, 1.7, 3.0, 8.669999999999999547029006, "equal"},
    {Fn::Pow, 0.3, 0.30029999999999996, 3.0, 2.702700899999999502499559e-1, "close 0.001"},
    {Fn::Pow, 0.3, 0.30000029999999994, 3.0, 2.700002700000899378199407e-1, "close 1e-06"},
    {Fn::Pow, 0.3, 0.3000000003, 3.0, 2.700000002700000024458857e-1, "close 1e-09"},
    {Fn::Pow, 0.3, 0.3000000000003, 3.0, 2.700000000002700140111501e-1, "close 1e-12"},
    {Fn::Pow, 0.3, 0.3000000000000003, 3.0, 2.700000000000002797762022e-1, "close 1e-15"},
    {Fn::Pow, 0.3, 0.3, 3.0, 2.699999999999999800159856e-1, "equal"},
    {Fn::Pow, 1.0, 1.0000099999999998, 3.0, 3.000030000099999530399175, "threshold series"},
    {Fn::Pow, 1.0, 1.00001, 3.0, 3.000030000100000196537431, "threshold direct"},
    {Fn::Pow, 1.0, 1.000009, 3.0, 3.000027000080999777200883, "threshold series"},
    {Fn::Pow, 1.0, 1.000011, 3.0, 3.000033000120999949735838, "threshold direct"},
    {Fn::Pow, 1.7, 1.700017, 3.0, 8.670086700288999209071889, "threshold series"},
    {Fn::Pow, 1.7, 1.7000170000000001, 3.0, 8.670086700289000341506923, "threshold direct"},
    {Fn::Pow, 1.7, 1.7000152999999998, 3.0, 8.670078030234088676650663, "threshold series"},
    {Fn::Pow, 1.7, 1.7000187, 3.0, 8.670095370349689741493824, "threshold direct"},
    {Fn::Pow, 1.0, 2.0, 0.001, 6.933874625806325520076684e-4, "far"},
    {Fn::Pow, 0.25, 9.0, 0.001, 4.097113306467556258070811e-4, "far"},
    {Fn::Pow, 3.0, 7.0, 0.001, 2.121471691639949003032963e-4, "far"},
    {Fn::Pow, 0.1, 0.3, 0.001, 5.483439287975771895275826e-3, "far"},
    {Fn::Pow, 1.7, 1.7016999999999998, 0.001, 5.882537274709852980463831e-4, "close 0.001"},
    {Fn::Pow, 1.7, 1.7000016999999998, 0.001, 5.885472172319711817346925e-4, "close 1e-06"},
    {Fn::Pow, 1.7, 1.7000000017, 0.001, 5.885475109172776172534428e-4, "close 1e-09"},
    {Fn::Pow, 1.7, 1.7000000000017002, 0.001, 5.885475112109631099351567e-4, "close 1e-12"},
    {Fn::Pow, 1.7, 1.7000000000000017, 0.001, 5.885475112112568160477468e-4, "close 1e-15"},
    {Fn::Pow, 1.7, 1.7, 0.001, 5.885475112112571232315487e-4, "equal"},
    {Fn::Pow, 0.3, 0.30029999999999996, 0.001, 3.327660616288868406806295e-3, "close 0.001"},
    {Fn::Pow, 0.3, 0.30000029999999994, 0.001, 3.329320842605011919160133e-3, "close 1e-06"},
    {Fn::Pow, 0.3, 0.3000000003, 0.001, 3.329322503937498369444575e-3, "close 1e-09"},
    {Fn::Pow, 0.3, 0.3000000000003, 0.001, 3.329322505598831891504718e-3, "close 1e-12"},
    {Fn::Pow, 0.3, 0.3000000000000003, 0.001, 3.329322505600493251183761e-3, "close 1e-15"},
    {Fn::Pow, 0.3, 0.3, 0.001, 3.329322505600495097480867e-3, "equal"},
    {Fn::Pow, 1.0, 1.0000099999999998, 0.001, 9.999950050332831994636311e-4, "threshold series"},
    {Fn::Pow, 1.0, 1.00001, 0.001, 9.99995005033283088553829e-4, "threshold direct"},
    {Fn::Pow, 1.0, 1.000009, 0.001, 9.999955045269593894972259e-4, "threshold series"},
    {Fn::Pow, 1.0, 1.000011, 0.001, 9.999945055402725505479974e-4, "threshold direct"},
    {Fn::Pow, 1.7, 1.700017, 0.001, 5.885445714360273204023472e-4, "threshold series"},
    {Fn::Pow, 1.7, 1.7000170000000001, 0.001, 5.885445714360272820048836e-4, "threshold direct"},
    {Fn::Pow, 1.7, 1.7000152999999998, 0.001, 5.885448654117873500454012e-4, "threshold series"},
    {Fn::Pow, 1.7, 1.7000187, 0.001, 5.885442774606590586035915e-4, "threshold direct"},
    {Fn::Exp, 1.0, 2.0, 0.0, 4.67077427047160499187014, "far"},
    {Fn::Exp, 0.25, 9.0, 0.0, 9.259199888181367161401055e+2, "far"},
    {Fn::Exp, 3.0, 7.0, 0.0, 2.691369053763177328806979e+2, "far"},
    {Fn::Exp, 0.1, 0.3, 0.0, 1.223439447501777392125109, "far"},
    {Fn::Exp, 1.7, 1.7016999999999998, 0.0, 5.478602884749104552792635, "close 0.001"},
    {Fn::Exp, 1.7, 1.7000016999999998, 0.0, 5.473952044585118782930499, "close 1e-06"},
    {Fn::Exp, 1.7, 1.7000000017, 0.0, 5.473947396380055188282476, "close 1e-09"},
    {Fn::Exp, 1.7, 1.7000000000017002, 0.0, 5.473947391731852908169329, "close 1e-12"},
    {Fn::Exp, 1.7, 1.7000000000000017, 0.0, 5.473947391727204379540709, "close 1e-15"},
    {Fn::Exp, 1.7, 1.7, 0.0, 5.473947391727199517698765, "equal"},
    {Fn::Exp, 0.3, 0.30029999999999996, 0.0, 1.350061306646540263074957, "close 0.001"},
    {Fn::Exp, 0.3, 0.30000029999999994, 0.0, 1.349859010054844441637695, "close 1e-06"},
    {Fn::Exp, 0.3, 0.3000000003, 0.0, 1.349858807778481926907122, "close 1e-09"},
    {Fn::Exp, 0.3, 0.3000000000003, 0.0, 1.349858807576205593312144, "close 1e-12"},
    {Fn::Exp, 0.3, 0.3000000000000003, 0.0, 1.34985880757600331379395, "close 1e-15"},
    {Fn::Exp, 0.3, 0.3, 0.0, 1.349858807576003088997301, "equal"},
    {Fn::Exp, -2.5, -2.5024999999999995, 0.0, 8.198247782741179688507553e-2, "close 0.001"},
    {Fn::Exp, -2.5, -2.5000025, 0.0, 8.208489601773602433392571e-2, "close 1e-06"},
    {Fn::Exp, -2.5, -2.5000000025, 0.0, 8.208499852129253848548135e-2, "close 1e-09"},
    {Fn::Exp, -2.5, -2.5000000000025002, 0.0, 8.208499862379617979949366e-2, "close 1e-12"},
    {Fn::Exp, -2.5, -2.5000000000000027, 0.0, 8.208499862389868581034214e-2, "close 1e-15"},
    {Fn::Exp, -2.5, -2.5, 0.0, 8.208499862389879516952867e-2, "equal"},
    {Fn::Exp, 1.0, 1.0000099999999998, 0.0, 2.718295419913492128238186, "threshold series"},
    {Fn::Exp, 1.0, 1.00001, 0.0, 2.718295419913492430030106, "threshold direct"},
    {Fn::Exp, 1.0, 1.000009, 0.0, 2.718294060763970087377538, "threshold series"},
    {Fn::Exp, 1.0, 1.000011, 0.0, 2.718296779063920571629358, "threshold direct"},
    {Fn::Exp, 1.7, 1.7000099999999998, 0.0, 5.47397476155539040987837, "threshold series"},
    {Fn::Exp, 1.7, 1.70001, 0.0, 5.473974761555391017612664, "threshold direct"},
    {Fn::Exp, 1.7, 1.7000089999999999, 0.0, 5.473972024564360542891256, "threshold series"},
    {Fn::Exp, 1.7, 1.700011, 0.0, 5.473977498548245547415382, "threshold direct"},
    {Fn::Log, 1e-200, 3e-200, 0.0, 5.493061443340548555300585e+199, "magnitude"},
    {Fn::Log, 1e-200, 1.0000000001e-200, 0.0, 9.999999999499999840276757e+199, "magnitude"},
    {Fn::Log, 1e-200, 1e-200, 0.0, 1.000000000000000017899738e+200, "magnitude"},
    {Fn::Log, 1e+200, 3e+200, 0.0, 5.493061443340548623234046e-201, "magnitude"},
    {Fn::Log, 1e+200, 1.00000001e+200, 0.0, 9.99999995000000081158645e-201, "magnitude"},
    {Fn::Log, 1e+200, 1e+200, 0.0, 1.000000000000000030266878e-200, "magnitude"},
    {Fn::Log, 1e-200, 1e+200, 0.0, 9.210340371976183014716541e-198, "magnitude"},
    {Fn::Log, 1e-300, 1.0, 0.0, 6.907755278982137051803383e+2, "magnitude"},
    {Fn::Log, 1e-310, 1e-305, 0.0, 1.151304059537618527574384e+306, "magnitude"},
    {Fn::Log, 5e-320, 1e-300, 0.0, 4.444227508032609948458684e+301, "magnitude"},
    {Fn::Log, 0.001, 1000.0, 0.0, 1.381552437348864757193913e-2, "magnitude"},
    {Fn::Sqrt, 0.0, 4.0, 0.0, 5.0e-1, "magnitude"},
    {Fn::Sqrt, 0.0, 1e-300, 0.0, 9.999999999999999874704541e+149, "magnitude"},
    {Fn::Sqrt, 1e-200, 1e+200, 0.0, 1.000000000000000015133439e-100, "magnitude"},
    {Fn::Sqrt, 1e-200, 1.000000000001e-200, 0.0, 4.999999999998749965942505e+99, "magnitude"},
    {Fn::Pow, 0.0, 2.0, 0.5, 7.071067811865475244008444e-1, "zero"},
    {Fn::Pow, 0.0, 0.001, 0.5, 3.16227766016837929908483e+1, "zero"},
    {Fn::Pow, 0.0, 2.0, 2.0, 2.0, "zero"},
    {Fn::Pow, 0.0, 0.001, 2.0, 1.000000000000000020816682e-3, "zero"},
    {Fn::Pow, 0.0, 2.0, 3.0, 4.0, "zero"},
    {Fn::Pow, 0.0, 0.001, 3.0, 1.000000000000000041633363e-6, "zero"},
    {Fn::Pow, 0.0, 2.0, 0.001, 5.003466937312903162760038e-1, "zero"},
    {Fn::Pow, 0.0, 0.001, 0.001, 9.931160484209337507809121e+2, "zero"},
    {Fn::Pow, 0.0, 2.0, 1.0, 1.0, "zero"},
    {Fn::Pow, 0.0, 0.001, 1.0, 1.0, "zero"},
    {Fn::Pow, 0.0, 0.0, 2.0, 0.0, "double zero"},
    {Fn::Pow, 0.0, 0.0, 3.0, 0.0, "double zero"},
    {Fn::Pow, 0.0, 0.0, 1.0, 1.0, "double zero"},
    {Fn::Pow, 1e-100, 1.0000001e-100, 0.5, 4.999999875000006188581612e+49, "magnitude"},
    {Fn::Pow, 1e+50, 2e+50, 0.5, 4.14213562373095032999918e-26, "magnitude"},
    {Fn::Pow, 1e-100, 1.0000001e-100, -1.5, -1.499999812500021782870553e+250, "magnitude"},
    {Fn::Pow, 1e+50, 2e+50, -1.5, -6.464466094067261144936067e-126, "magnitude"},
    {Fn::Pow, 1e-100, 1.0000001e-100, 2.0, 2.000000100000000049134402e-100, "magnitude"},
    {Fn::Pow, 1e+50, 2e+50, 2.0, 3.000000000000000228893095e+50, "magnitude"},
    {Fn::Pow, 1e-100, 1.0000001e-100, 3.0, 3.000000300000010147403213e-200, "magnitude"},
    {Fn::Pow, 1e+50, 2e+50, 3.0, 7.000000000000001068167778e+100, "magnitude"},
    {Fn::Pow, 1e-100, 1.0000001e-100, 0.001, 7.943281950475888146113083e+96, "magnitude"},
    {Fn::Pow, 1e+50, 2e+50, 0.001, 7.779935289970817893071093e-54, "magnitude"},
    {Fn::Exp, -700.0, -690.0, 0.0, 2.171639684624389410773557e-301, "large"},
    {Fn::Exp, -700.0, -700.0000000007001, 0.0, 9.859676540308472195526424e-305, "large"},
    {Fn::Exp, -700.0, -700.0, 0.0, 9.859676543759770856705373e-305, "large"},
    {Fn::Exp, -745.0, -700.0, 0.0, 2.191039231946615745871808e-306, "large"},
    {Fn::Exp, 700.0, 705.0, 0.0, 2.990223025031688037471825e+305, "large"},
    {Fn::Exp, 700.0, 700.0000000007001, 0.0, 1.014232055090028096560816e+304, "large"},
    {Fn::Exp, 709.0, 709.5, 0.0, 1.06629114631827122390499e+308, "large"},
    {Fn::Exp, -700.0, 700.0, 0.0, 7.24451467667860363896664e+300, "large"},
    {Fn::Exp, -1e+300, 0.0, 0.0, 9.999999999999999474952397e-301, "large"},
    {Fn::Exp, -50.0, 50.0, 0.0, 5.184705528587072464087453e+19, "large"},
    {Fn::Exp, 0.0, 1e-300, 0.0, 1.0, "large"},
    // Exact double zeros: the derivative at 0 is infinite for sqrt and pow with p < 1.
    {Fn::Sqrt, 0.0, 0.0, 0.0, kInf, "double zero"},
    {Fn::Pow, 0.0, 0.0, 0.5, kInf, "double zero"},
    {Fn::Pow, 0.0, 0.0, 0.001, kInf, "double zero"},
};

void check_against_reference(Fn fn) {
  int checked = 0;
  for (const auto& c : kCases) {
    if (c.fn != fn) continue;
    ++checked;
    const double got = mm::divided_difference(c.fn, c.a, c.b, c.p);
    EXPECT_LE(relative_error(got, c.ref), kTol) << describe(c, got);
    // The form with f(a), f(b) given (the backward kernels' per-pair weight).
    const double cached = mm::divided_difference(c.fn, c.a, c.b, mm::spectral_value(c.fn, c.a, c.p),
                                                 mm::spectral_value(c.fn, c.b, c.p), c.p);
    EXPECT_LE(relative_error(cached, c.ref), kTol) << "f(a), f(b) given: " << describe(c, cached);
  }
  EXPECT_GT(checked, 20);
}

TEST(DividedDifferenceLog, MatchesHighPrecisionReference) { check_against_reference(Fn::Log); }
TEST(DividedDifferenceSqrt, MatchesHighPrecisionReference) { check_against_reference(Fn::Sqrt); }
TEST(DividedDifferencePow, MatchesHighPrecisionReference) { check_against_reference(Fn::Pow); }
TEST(DividedDifferenceExp, MatchesHighPrecisionReference) { check_against_reference(Fn::Exp); }

// The typed entry points agree with the dispatching one, on every row.
// Second divided differences f[a, b, c] (the double backward's weights), from
// the same mpmath snippet with
//   def dd2(fn, a, b, c, p=0.0):  # sorted a <= b <= c; f''(a)/2 at a triple tie
//       return d2f(a) / 2 if a == c else (dd(fn, b, c, p) - dd(fn, a, b, p)) / (c - a)
// (exact zeros of sqrt and pow by their closed forms, infinite where f'' is).
struct SecondCase {
  Fn fn;
  double a, b, c, p, ref;
  const char* regime;
};

const SecondCase kSecondCases[] = {
    {Fn::Log, 1.7, 1.7, 1.7, 0.0, -1.730103806228373792812784e-1, "triple tie"},
    {Fn::Log, 1.0, 1.0, 2.0, 0.0, -3.068528194400546905827679e-1, "double tie"},
    {Fn::Log, 1.0, 2.0, 2.0, 0.0, -1.931471805599453094172321e-1, "double tie"},
    {Fn::Log, 1.0, 1.000000000001, 1.000000000002, 0.0, -4.999999999989999851142877e-1, "cluster"},
    {Fn::Log, 1.0, 1.00001, 1.3, 0.0, -4.181721117649351696484804e-1, "close"},
    {Fn::Log, 1.0, 1.5, 1.9, 0.0, -2.443980789508364291931428e-1, "close"},
    {Fn::Log, 1.0, 3.0, 10.0, 0.0, -4.192333660337218932159702e-2, "far"},
    {Fn::Log, 0.001, 1.0, 1000.0, 0.0, -6.907762186744323775684459e-3, "far"},
    {Fn::Log, 1e-150, 1e-150, 3e-150, 0.0, -2.25346927832972566352968e+299, "magnitude"},
    {Fn::Log, 1e+100, 1.5e+100, 1.9e+100, 0.0, -2.443980789508364436185772e-201, "magnitude"},
    {Fn::Log, 1e-300, 1.0, 1e+300, 0.0, -6.907755278982136689113349e-298, "magnitude"},
    {Fn::Log, 0.001, 0.001, 0.0010000001, 0.0, -4.999999666666691344829257e+5, "o2p eps"},
    {Fn::Sqrt, 0.0, 0.0, 4.0, 0.0, -kInf, "zero"},
    {Fn::Sqrt, 0.0, 1.0, 4.0, 0.0, -1.666666666666666666666667e-1, "zero"},
    {Fn::Sqrt, 2.0, 2.0, 2.0, 0.0, -4.419417382415922027505277e-2, "triple tie"},
    {Fn::Sqrt, 1.0, 1.000000000001, 9.0, 0.0, -3.124999999998828020819631e-2, "cluster"},
    {Fn::Exp, 0.0, 0.0, 0.0, 0.0, 5.0e-1, "triple tie"},
    {Fn::Exp, 0.3, 0.3, 0.31, 0.0, 6.771848041465913702242594e-1, "close"},
    {Fn::Exp, -0.02, 0.0, 0.01, 0.0, 4.983457918190288418741867e-1, "series"},
    {Fn::Exp, -0.5, 0.2, 0.4, 0.0, 5.263566503751036306246599e-1, "close"},
    {Fn::Exp, -3.0, 0.0, 2.0, 0.0, 5.755580811175892855883322e-1, "far"},
    {Fn::Exp, 700.0, 700.0, 700.5, 0.0, 6.033515198599671722321667e+303, "large"},
    {Fn::Exp, -700.0, -699.5, -699.0, 0.0, 8.298678494612252431532544e-305, "large"},
    {Fn::Exp, 1.0, 1.000000000001, 1.000000000003, 0.0, 1.359140914231334866073707, "cluster"},
    {Fn::Pow, 1.0, 1.0, 1.0, 0.5, -1.25e-1, "triple tie"},
    {Fn::Pow, 1.0, 1.1, 1.5, 0.5, -9.649684729584342550171081e-2, "close"},
    {Fn::Pow, 1.0, 1.000000000001, 1.000000000002, 0.5, -1.249999999998124972089289e-1, "cluster"},
    {Fn::Pow, 1.0, 4.0, 9.0, 0.5, -1.666666666666666666666667e-2, "far"},
    {Fn::Pow, 1.0, 1.02, 1.04, 2.5, 1.893642007512542386277841, "series"},
    {Fn::Pow, 2.0, 2.0, 3.0, 2.5, 2.860535206762040202531819, "close"},
    {Fn::Pow, 0.0, 1.0, 2.0, 2.5, 1.828427124746190097603377, "zero"},
    {Fn::Pow, 0.0, 0.0, 2.0, 2.5, 1.414213562373095048801689, "zero"},
    {Fn::Pow, 0.0, 0.0, 0.0, 2.5, 0.0, "zero"},
    {Fn::Pow, 1.0, 1.0, 1.2, -1.5, 1.518144357818267892943085, "close"},
    {Fn::Pow, 1.0, 1.001, 1.002, -1.5, 1.868454686047745090214904, "series"},
    {Fn::Pow, 1e-50, 2e-50, 5e-50, -1.5, 1.396024297272413851445972e+174, "magnitude"},
    {Fn::Pow, 1.0, 1.3, 1.6, 0.3, -6.863108701517151706032446e-2, "close"},
    {Fn::Pow, 1.0, 1.2, 1.5, 1.0001, 4.082689059383598090308612e-5, "near 1"},
    {Fn::Pow, 0.0, 0.0, 0.0, 2.0, 1.0, "zero"},
    {Fn::Pow, 0.0, 0.0, 0.0, 3.0, 0.0, "zero"},
    {Fn::Pow, 0.0, 0.0, 5.0, 2.0, 1.0, "zero"},
    {Fn::Pow, 0.0, 0.0, 5.0, 1.0, 0.0, "zero"},
    {Fn::Pow, 1.0, 1.01, 1.03, 30.0, 6.39526208651572537109391e+2, "large p"},
    {Fn::Pow, 1.0, 1.01, 1.04, -20.5, 1.546794266802945230591574e+2, "large p"},
};

// The recursion branches subtract two first divided differences with at most
// a factor ~100 of cancellation (measured: below 60 ulps on glibc). For pow
// the second derivative p (p - 1) x^(p-2) / 2 vanishes as p nears 1 while the
// first ones do not: its relative accuracy is eps / |p - 1| (26 838 ulps at
// p = 1.0001, an absolute error of 1e-16 beside first differences of ~1).
constexpr double kSecondTol = 1e-13;

double second_tolerance(const SecondCase& c) {
  return c.fn == Fn::Pow && c.p != 1.0 ? kSecondTol * std::max(1.0, 1.0 / std::abs(c.p - 1.0))
                                       : kSecondTol;
}

TEST(SecondDividedDifference, MatchesHighPrecisionReference) {
  for (const auto& c : kSecondCases) {
    double v[3] = {c.a, c.b, c.c};
    std::sort(v, v + 3);
    const double got = mm::second_divided_difference(c.fn, v[0], v[1], v[2], c.p,
                                                     mm::divided_difference(c.fn, v[0], v[1], c.p),
                                                     mm::divided_difference(c.fn, v[1], v[2], c.p));
    EXPECT_LE(relative_error(got, c.ref), second_tolerance(c))
        << fn_name(c.fn) << "[" << c.a << ", " << c.b << ", " << c.c << "] p=" << c.p << " ("
        << c.regime << "): got " << got << ", want " << c.ref << ", "
        << relative_error(got, c.ref) / kEps << " ulps";
  }
}

TEST(DividedDifference, DispatchMatchesTypedFunctions) {
  for (const auto& c : kCases) {
    const double got = mm::divided_difference(c.fn, c.a, c.b, c.p);
    double typed = 0.0;
    switch (c.fn) {
      case Fn::Log:
        typed = mm::divided_difference_log(c.a, c.b);
        break;
      case Fn::Sqrt:
        typed = mm::divided_difference_sqrt(c.a, c.b);
        break;
      case Fn::Pow:
        typed = mm::divided_difference_pow(c.a, c.b, c.p);
        break;
      case Fn::Exp:
        typed = mm::divided_difference_exp(c.a, c.b);
        break;
    }
    EXPECT_TRUE(same_bits(got, typed)) << describe(c, got);
  }
}

// f[a, b] == f[b, a] bit for bit: the backward fills F1 and its transpose from
// one evaluation, so an asymmetric formula would make sym(G) non-symmetric.
TEST(DividedDifference, Symmetric) {
  for (const auto& c : kCases) {
    const double ab = mm::divided_difference(c.fn, c.a, c.b, c.p);
    const double ba = mm::divided_difference(c.fn, c.b, c.a, c.p);
    EXPECT_TRUE(same_bits(ab, ba)) << describe(c, ab) << "; f[b, a] = " << ba;
  }
}

// f[a, a] = f'(a), against the derivative evaluated directly in double.
TEST(DividedDifference, EqualArgumentsGiveTheDerivative) {
  const double xs[] = {1e-300, 1e-200, 1e-8, 0.3, 1.0, 1.7, 2.0, 1e8, 1e200};
  for (double x : xs) {
    EXPECT_LE(relative_error(mm::divided_difference_log(x, x), 1.0 / x), 2 * kEps) << x;
    EXPECT_LE(relative_error(mm::divided_difference_sqrt(x, x), 0.5 / std::sqrt(x)), 2 * kEps)
        << x;
    for (double p : {0.5, -1.5, 2.0, 3.0, 0.001, 1.0}) {
      const double want = p * std::pow(x, p - 1.0);
      if (!std::isfinite(want) || want == 0.0) continue;  // outside double's range
      // The reference itself rounds p - 1 (p = 0.001), an error of up to
      // |ln x| * eps / 2 relative: allow it, so a header that avoids that
      // rounding passes too.
      EXPECT_LE(relative_error(mm::divided_difference_pow(x, x, p), want),
                (4 + std::abs(std::log(x))) * kEps)
          << "x=" << x << " p=" << p;
    }
  }
  for (double x : {-745.0, -700.0, -2.5, 0.0, 1.0, 1.7, 700.0, 709.0}) {
    EXPECT_EQ(mm::divided_difference_exp(x, x), std::exp(x)) << x;
  }
}

// Pow with a zero argument: f[0, b] = b^(p-1) exactly as the formula says, and
// the derivative at a double zero is 0 (p > 1), 1 (p = 1) or +inf (p < 1).
TEST(DividedDifferencePow, ZeroArgument) {
  for (double p : {0.5, 2.0, 3.0, 0.001, 1.0, 1.5}) {
    for (double b : {1e-300, 1e-3, 2.0, 1e100}) {
      const double want = std::pow(b, p - 1.0);
      EXPECT_EQ(mm::divided_difference_pow(0.0, b, p), want) << "b=" << b << " p=" << p;
      EXPECT_EQ(mm::divided_difference_pow(b, 0.0, p), want) << "b=" << b << " p=" << p;
    }
  }
  EXPECT_EQ(mm::divided_difference_pow(0.0, 0.0, 2.0), 0.0);
  EXPECT_EQ(mm::divided_difference_pow(0.0, 0.0, 3.0), 0.0);
  EXPECT_EQ(mm::divided_difference_pow(0.0, 0.0, 1.0), 1.0);
  EXPECT_EQ(mm::divided_difference_pow(0.0, 0.0, 0.5), kInf);
  EXPECT_EQ(mm::divided_difference_pow(0.0, 0.0, 0.001), kInf);
  EXPECT_EQ(mm::divided_difference_sqrt(0.0, 0.0), kInf);
}

// No NaN or infinity anywhere on the domain where the true value is finite,
// including the subnormal range where (hi - lo) / lo overflows.
TEST(DividedDifference, FiniteOnExtremeButValidArguments) {
  const double tiny = std::numeric_limits<double>::denorm_min();
  const double big = std::numeric_limits<double>::max();
  EXPECT_TRUE(std::isfinite(mm::divided_difference_log(tiny, 1.0)));
  EXPECT_TRUE(std::isfinite(mm::divided_difference_log(tiny, big)));
  EXPECT_TRUE(std::isfinite(mm::divided_difference_log(big, big)));
  EXPECT_TRUE(std::isfinite(mm::divided_difference_sqrt(tiny, big)));
  EXPECT_TRUE(std::isfinite(mm::divided_difference_pow(tiny, 1.0, 0.5)));
  EXPECT_TRUE(std::isfinite(mm::divided_difference_exp(-big, 0.0)));
  EXPECT_TRUE(std::isfinite(mm::divided_difference_exp(-big, -big)));
  EXPECT_EQ(mm::divided_difference_exp(-big, -big), 0.0);
  // exp(lambda) itself overflows above about 709.78, and so does f[a, b]
  // when both arguments do.
  EXPECT_EQ(mm::divided_difference_exp(710.0, 711.0), kInf);
}

// Regression: for far-apart arguments lo^(p-1) * expm1(p log1p(d)) / d
// amplifies the rounding of p log1p(d) by |p log1p(d)| (57 ulps at
// hi/lo = 1e12, p = 3) and overflows once p log1p(d) passes ~709 (inf, or
// 0 * inf = NaN, where the true value is finite). The header switches to the
// direct quotient (hi^p - lo^p) / (hi - lo) there, which has no cancellation.
TEST(DividedDifferencePow, FarApartLargeRatio) {
  const DDCase cases[] = {
      {Fn::Pow, 0.4806973157109527, 438485057066.41077, 3.0, 1.922691452707442851517215e+23,
       "large ratio, 57 ulps"},
      {Fn::Pow, 1e-130, 1.0, 2.0, 1.0, "ratio 1e130, 79 ulps"},
      {Fn::Pow, 1e-130, 1.0, 3.0, 1.0, "ratio 1e130, expm1 overflows"},
      {Fn::Pow, 1e-130, 1.0, -1.5, -9.999999999999998709288728e+194, "ratio 1e130, lo^(p-1) overflows"},
      {Fn::Pow, 1e-200, 1e-90, 3.0, 9.999999999999999898750138e-181, "ratio 1e110, 0 * inf"},
  };
  for (const auto& c : cases) {
    const double got = mm::divided_difference(c.fn, c.a, c.b, c.p);
    EXPECT_LE(relative_error(got, c.ref), kTol)
        << "far-apart arguments: " << describe(c, got);
  }
}

// Regression: pow(lo, p - 1) rounds p - 1 when p is not dyadic (p = 0.3),
// an error multiplied by |ln lo| in the result (57 ulps at lo = 1e-100, 115
// at 1e+-200). The header forms lo^(p-1) as pow(lo, p) / lo instead.
TEST(DividedDifferencePow, LargeMagnitudeNonDyadicExponent) {
  const DDCase cases[] = {
      {Fn::Pow, 1e-100, 2e-100, 0.3, 2.311444133449168626840809e+69, "lo = 1e-100, 57 ulps"},
      {Fn::Pow, 1e-200, 2e-200, 0.3, 2.311444133449174597086348e+139, "lo = 1e-200, 115 ulps"},
      {Fn::Pow, 1e200, 1.5e200, 0.3, 2.586938709137095755646083e-141, "lo = 1e200, 115 ulps"},
      {Fn::Pow, 1e150, 3e150, -0.3, -1.403884533375683479617422e-196, "lo = 1e150, 87 ulps"},
  };
  for (const auto& c : cases) {
    const double got = mm::divided_difference(c.fn, c.a, c.b, c.p);
    EXPECT_LE(relative_error(got, c.ref), kTol)
        << "rounded p - 1: " << describe(c, got);
  }
}

// ---------------------------------------------------------------------------
// log1p_ratio, expm1_ratio, powm1_ratio around 0 and across the threshold.

enum class Ratio { Log1p, Expm1, Powm1 };

struct RatioCase {
  Ratio kind;
  double d, p;
  double ref;
};

// {kind, d, p, ratio to 25 digits}
const RatioCase kRatios[] = {
    {Ratio::Log1p, 0.0, 0.0, 1.0},
    {Ratio::Expm1, 0.0, 0.0, 1.0},
    {Ratio::Powm1, 0.0, 0.5, 5.0e-1},
    {Ratio::Powm1, 0.0, -1.5, -1.5},
    {Ratio::Powm1, 0.0, 2.0, 2.0},
    {Ratio::Powm1, 0.0, 3.0, 3.0},
    {Ratio::Powm1, 0.0, 0.001, 1.000000000000000020816682e-3},
    {Ratio::Log1p, 1e-20, 0.0, 9.99999999999999999995e-1},
    {Ratio::Expm1, 1e-20, 0.0, 1.000000000000000000005},
    {Ratio::Powm1, 1e-20, 0.5, 4.9999999999999999999875e-1},
    {Ratio::Powm1, 1e-20, -1.5, -1.49999999999999999998125},
    {Ratio::Powm1, 1e-20, 2.0, 2.00000000000000000001},
    {Ratio::Powm1, 1e-20, 3.0, 3.00000000000000000003},
    {Ratio::Powm1, 1e-20, 0.001, 1.000000000000000020811687e-3},
    {Ratio::Log1p, -1e-20, 0.0, 1.000000000000000000005},
    {Ratio::Expm1, -1e-20, 0.0, 9.99999999999999999995e-1},
    {Ratio::Powm1, -1e-20, 0.5, 5.0000000000000000000125e-1},
    {Ratio::Powm1, -1e-20, -1.5, -1.50000000000000000001875},
    {Ratio::Powm1, -1e-20, 2.0, 1.99999999999999999999},
    {Ratio::Powm1, -1e-20, 3.0, 2.99999999999999999997},
    {Ratio::Powm1, -1e-20, 0.001, 1.000000000000000020821677e-3},
    {Ratio::Log1p, 1e-12, 0.0, 9.999999999995000000000003e-1},
    {Ratio::Expm1, 1e-12, 0.0, 1.0000000000005},
    {Ratio::Powm1, 1e-12, 0.5, 4.999999999998750000000001e-1},
    {Ratio::Powm1, 1e-12, -1.5, -1.499999999998125000000002},
    {Ratio::Powm1, 1e-12, 2.0, 2.000000000001},
    {Ratio::Powm1, 1e-12, 3.0, 3.000000000003000000000001},
    {Ratio::Powm1, 1e-12, 0.001, 9.99999999999500520816682e-4},
    {Ratio::Log1p, -1e-12, 0.0, 1.0000000000005},
    {Ratio::Expm1, -1e-12, 0.0, 9.999999999995000000000002e-1},
    {Ratio::Powm1, -1e-12, 0.5, 5.000000000001250000000001e-1},
    {Ratio::Powm1, -1e-12, -1.5, -1.500000000001875000000002},
    {Ratio::Powm1, -1e-12, 2.0, 1.999999999999},
    {Ratio::Powm1, -1e-12, 3.0, 2.999999999997000000000001},
    {Ratio::Powm1, -1e-12, 0.001, 1.000000000000499520816682e-3},
    {Ratio::Log1p, 1e-08, 0.0, 9.99999995000000033333333e-1},
    {Ratio::Expm1, 1e-08, 0.0, 1.000000005000000016666667},
    {Ratio::Powm1, 1e-08, 0.5, 4.999999987500000062499999e-1},
    {Ratio::Powm1, 1e-08, -1.5, -1.499999981250000218749997},
    {Ratio::Powm1, 1e-08, 2.0, 2.00000001},
    {Ratio::Powm1, 1e-08, 3.0, 3.000000030000000100000001},
    {Ratio::Powm1, 1e-08, 0.001, 9.999999950050000541000313e-4},
    {Ratio::Log1p, -1e-08, 0.0, 1.000000005000000033333334},
    {Ratio::Expm1, -1e-08, 0.0, 9.999999950000000166666665e-1},
    {Ratio::Powm1, -1e-08, 0.5, 5.000000012500000062500001e-1},
    {Ratio::Powm1, -1e-08, -1.5, -1.500000018750000218750003},
    {Ratio::Powm1, -1e-08, 2.0, 1.99999999},
    {Ratio::Powm1, -1e-08, 3.0, 2.999999970000000099999999},
    {Ratio::Powm1, -1e-08, 0.001, 1.000000004995000054100032e-3},
    {Ratio::Log1p, 9.9999e-06, 0.0, 9.999950000833324166792005e-1},
    {Ratio::Expm1, 9.9999e-06, 0.0, 1.000004999966666375000799},
    {Ratio::Powm1, 9.9999e-06, 0.5, 4.999987500187498359394954e-1},
    {Ratio::Powm1, 9.9999e-06, -1.5, -1.499981250406243164184149},
    {Ratio::Powm1, 9.9999e-06, 2.0, 2.000009999900000000000599},
    {Ratio::Powm1, 9.9999e-06, 3.0, 3.000029999799998000011796},
    {Ratio::Powm1, 9.9999e-06, 0.001, 9.999950050832324556201724e-4},
    {Ratio::Log1p, -9.9999e-06, 0.0, 1.000004999983332916664799},
    {Ratio::Expm1, -9.9999e-06, 0.0, 9.999950000666662916693673e-1},
    {Ratio::Powm1, -9.9999e-06, 0.5, 5.000012499937499140623014e-1},
    {Ratio::Powm1, -9.9999e-06, -1.5, -1.50001875003124808591374},
    {Ratio::Powm1, -9.9999e-06, 2.0, 1.999990000099999999999401},
    {Ratio::Powm1, -9.9999e-06, 3.0, 2.999970000399998000008204},
    {Ratio::Powm1, -9.9999e-06, 0.001, 1.000004994983332954689839e-3},
    {Ratio::Log1p, 1e-05, 0.0, 9.999950000333330833349243e-1},
    {Ratio::Expm1, 1e-05, 0.0, 1.000005000016666708333826},
    {Ratio::Powm1, 1e-05, 0.5, 4.999987500062499609376712e-1},
    {Ratio::Powm1, 1e-05, -1.5, -1.499981250218747539088036},
    {Ratio::Powm1, 1e-05, 2.0, 2.000010000000000000000818},
    {Ratio::Powm1, 1e-05, 3.0, 3.000030000100000000002454},
    {Ratio::Powm1, 1e-05, 0.001, 9.999950050332831212762484e-4},
    {Ratio::Log1p, -1e-05, 0.0, 1.000005000033333583335742},
    {Ratio::Expm1, -1e-05, 0.0, 9.999950000166666249996743e-1},
    {Ratio::Powm1, -1e-05, 0.5, 5.000012500062500390628757e-1},
    {Ratio::Powm1, -1e-05, -1.5, -1.500018750218752460966104},
    {Ratio::Powm1, -1e-05, 2.0, 1.999989999999999999999182},
    {Ratio::Powm1, -1e-05, 3.0, 2.999970000099999999997546},
    {Ratio::Powm1, -1e-05, 0.001, 1.000004995033283620361107e-3},
    {Ratio::Log1p, 1.00001e-05, 0.0, 9.999949999833337499981617e-1},
    {Ratio::Expm1, 1.00001e-05, 0.0, 1.000005000066667041669338},
    {Ratio::Powm1, 1.00001e-05, 0.5, 4.999987499937500859373087e-1},
    {Ratio::Powm1, 1.00001e-05, -1.5, -1.499981250031251914038849},
    {Ratio::Powm1, 1.00001e-05, 2.0, 2.000010000099999999999343},
    {Ratio::Powm1, 1.00001e-05, 3.0, 3.00003000040000200000803},
    {Ratio::Powm1, 1.00001e-05, 0.001, 9.999950049833337869398272e-4},
    {Ratio::Log1p, -1.00001e-05, 0.0, 1.000005000083334250012505},
    {Ratio::Expm1, -1.00001e-05, 0.0, 9.999949999666669583341617e-1},
    {Ratio::Powm1, -1.00001e-05, 0.5, 5.000012500187501640644882e-1},
    {Ratio::Powm1, -1.00001e-05, -1.5, -1.500018750406256836059044},
    {Ratio::Powm1, -1.00001e-05, 2.0, 1.999989999900000000000657},
    {Ratio::Powm1, -1.00001e-05, 3.0, 2.99996999980000200001197},
    {Ratio::Powm1, -1.00001e-05, 0.001, 1.000004995083234286038185e-3},
    {Ratio::Log1p, 0.0001, 0.0, 9.99950003333083353329271e-1},
    {Ratio::Expm1, 0.0001, 0.0, 1.000050001666708334169077},
    {Ratio::Powm1, 0.0001, 0.5, 4.99987500624960940233571e-1},
    {Ratio::Powm1, 0.0001, -1.5, -1.499812521872539333164819},
    {Ratio::Powm1, 0.0001, 2.0, 2.000100000000000000004792},
    {Ratio::Powm1, 0.0001, 3.0, 3.000300010000000000014377},
    {Ratio::Powm1, 0.0001, 0.001, 9.999500533280854988533244e-4},
    {Ratio::Log1p, -0.0001, 0.0, 1.000050003333583353337397},
    {Ratio::Expm1, -0.0001, 0.0, 9.999500016666250008309235e-1},
    {Ratio::Powm1, -0.0001, 0.5, 5.000125006250390652351792e-1},
    {Ratio::Powm1, -0.0001, -1.5, -1.500187521877461208241442},
    {Ratio::Powm1, -0.0001, 2.0, 1.999899999999999999995208},
    {Ratio::Powm1, -0.0001, 3.0, 2.999700009999999999985624},
    {Ratio::Powm1, -0.0001, 0.001, 1.000049953328584582696765e-3},
    {Ratio::Log1p, 0.5, 0.0, 8.109302162163287639560262e-1},
    {Ratio::Expm1, 0.5, 0.0, 1.297442541400256293697302},
    {Ratio::Powm1, 0.5, 0.5, 4.494897427831780981972841e-1},
    {Ratio::Powm1, 0.5, -1.5, -9.11337892096365289690096e-1},
    {Ratio::Powm1, 0.5, 2.0, 2.5},
    {Ratio::Powm1, 0.5, 3.0, 4.75},
    {Ratio::Powm1, 0.5, 0.001, 8.110946403922264652998602e-4},
    {Ratio::Log1p, -0.5, 0.0, 1.386294361119890618834464},
    {Ratio::Expm1, -0.5, 0.0, 7.869386805747331527924009e-1},
    {Ratio::Powm1, -0.5, 0.5, 5.857864376269049511983113e-1},
    {Ratio::Powm1, -0.5, -1.5, -3.656854249492380195206755},
    {Ratio::Powm1, -0.5, 2.0, 1.5},
    {Ratio::Powm1, -0.5, 3.0, 1.75},
    {Ratio::Powm1, -0.5, 0.001, 1.385814019094956184079342e-3},
    {Ratio::Log1p, 10.0, 0.0, 2.397895272798370544061944e-1},
    {Ratio::Expm1, 10.0, 0.0, 2.20254657948067165169579e+3},
    {Ratio::Powm1, 10.0, 0.5, 2.316624790355399849114933e-1},
    {Ratio::Powm1, 10.0, -1.5, -9.725898777656578524866534e-2},
    {Ratio::Powm1, 10.0, 2.0, 1.2e+1},
    {Ratio::Powm1, 10.0, 3.0, 1.33e+2},
    {Ratio::Powm1, 10.0, 0.001, 2.400772522989942932778053e-4},
    {Ratio::Log1p, -0.999, 0.0, 6.91466994893106723725427},
    {Ratio::Expm1, -0.999, 0.0, 6.323848802666036827075664e-1},
    {Ratio::Powm1, -0.999, 0.5, 9.693465699682844779756055e-1},
    {Ratio::Powm1, -0.999, -1.5, -3.165343003171546668478599e+4},
    {Ratio::Powm1, -0.999, 2.0, 1.001000000000000000888178},
    {Ratio::Powm1, -0.999, 3.0, 1.001001000000000000889955},
    {Ratio::Powm1, -0.999, 0.001, 6.890842421487715405842475e-3},
};

double eval_ratio(Ratio kind, double d, double p) {
  switch (kind) {
    case Ratio::Log1p:
      return mm::log1p_ratio(d);
    case Ratio::Expm1:
      return mm::expm1_ratio(d);
    case Ratio::Powm1:
      return mm::powm1_ratio(d, p);
  }
  return 0.0;
}

TEST(SeriesRatios, MatchHighPrecisionReference) {
  const char* names[] = {"log1p_ratio", "expm1_ratio", "powm1_ratio"};
  for (const auto& c : kRatios) {
    const double got = eval_ratio(c.kind, c.d, c.p);
    EXPECT_LE(relative_error(got, c.ref), kTol)
        << names[int(c.kind)] << "(d=" << c.d << ", p=" << c.p << "): got " << got << ", want "
        << c.ref;
  }
}

TEST(SeriesRatios, ExactAtZero) {
  EXPECT_EQ(mm::log1p_ratio(0.0), 1.0);
  EXPECT_EQ(mm::expm1_ratio(0.0), 1.0);
  for (double p : {0.5, -1.5, 2.0, 3.0, 0.001}) EXPECT_EQ(mm::powm1_ratio(0.0, p), p);
  EXPECT_EQ(mm::log1p_ratio(0.0f), 1.0f);
  EXPECT_EQ(mm::expm1_ratio(0.0f), 1.0f);
  EXPECT_EQ(mm::powm1_ratio(0.0f, 0.5f), 0.5f);
}

// The two branches meet: just below and at the threshold the values differ by
// the slope times the step (a few ulps), not by a truncation jump.
TEST(SeriesRatios, ContinuousAcrossThreshold) {
  for (double sign : {1.0, -1.0}) {
    const double at = sign * mm::kSeriesThreshold;
    const double below = std::nextafter(at, 0.0);
    ASSERT_LT(std::abs(below), mm::kSeriesThreshold);
    ASSERT_FALSE(std::abs(at) < mm::kSeriesThreshold);
    EXPECT_NEAR(mm::log1p_ratio(below), mm::log1p_ratio(at), 4 * kEps) << at;
    EXPECT_NEAR(mm::expm1_ratio(below), mm::expm1_ratio(at), 4 * kEps) << at;
    for (double p : {0.5, -1.5, 2.0, 3.0, 0.001}) {
      EXPECT_NEAR(mm::powm1_ratio(below, p), mm::powm1_ratio(at, p), 8 * kEps * std::abs(p))
          << at << " p=" << p;
    }
  }
}

// ---------------------------------------------------------------------------
// float instantiation (what a float32 CUDA kernel would run). Reference: the
// double instantiation at the same (float) inputs, accurate to 1e-14 above.
// Bound: 8 float ulps (1e-6). The formulas themselves stay within 2 ulps; pow
// adds the rounding of p - 1 in float (p = 0.001f: |p - 1| is rounded to
// 2^-25), which scales lo^(p-1) by up to |ln lo| * 3e-8 relative: 3.5 ulps
// at lo = 1e6 (measured maximum over this grid: 2.9 ulps).

TEST(DividedDifferenceFloat, MatchesDoubleWithinEightUlps) {
  const double fulp = std::numeric_limits<float>::epsilon();
  const float los[] = {0.3f, 1.0f, 1.7f, 1e-6f, 1e6f};
  const double gaps[] = {1e-1, 1e-3, 9e-6, 1e-5, 1.1e-5, 1e-6, 1e-7, 0.0};
  double worst = 0.0;
  for (float lo : los) {
    for (double g : gaps) {
      const float hi = float(double(lo) * (1.0 + g));
      for (Fn fn : {Fn::Log, Fn::Sqrt, Fn::Pow, Fn::Exp}) {
        for (float p : {0.5f, -1.5f, 2.0f, 3.0f, 0.001f}) {
          if (fn != Fn::Pow && p != 0.5f) continue;
          if (fn == Fn::Exp && std::abs(lo) > 50.0f) continue;  // exp(lo) overflows float
          const double want = mm::divided_difference(fn, double(lo), double(hi), double(p));
          const float got = mm::divided_difference(fn, lo, hi, p);
          const double err = relative_error(got, want);
          worst = std::max(worst, err / fulp);
          EXPECT_LE(err, 8 * fulp) << fn_name(fn) << " float a=" << lo << " b=" << hi
                                   << " p=" << p << ": got " << got << ", want " << want;
          EXPECT_EQ(got, mm::divided_difference(fn, hi, lo, p));
        }
      }
    }
  }
  RecordProperty("worst_float_ulps", std::to_string(worst));
}

// ---------------------------------------------------------------------------
// spectral_value, clamp_to_domain, in_domain

TEST(SpectralValue, EvaluatesEachFunction) {
  EXPECT_EQ(mm::spectral_value(Fn::Log, 2.0, 0.0), std::log(2.0));
  EXPECT_EQ(mm::spectral_value(Fn::Sqrt, 2.0, 0.0), std::sqrt(2.0));
  EXPECT_EQ(mm::spectral_value(Fn::Pow, 2.0, -1.5), std::pow(2.0, -1.5));
  EXPECT_EQ(mm::spectral_value(Fn::Exp, 2.0, 0.0), std::exp(2.0));
  EXPECT_EQ(mm::spectral_value(Fn::Sqrt, 0.0, 0.0), 0.0);
  EXPECT_EQ(mm::spectral_value(Fn::Pow, 0.0, 0.5), 0.0);
}

TEST(ClampToDomain, MapsRoundingNegativesToZeroOnlyWhereZeroIsAllowed) {
  const double tol = 1e-15;
  // sqrt and pow with p > 0 are defined at 0: -tol <= lambda < 0 becomes 0.
  EXPECT_EQ(mm::clamp_to_domain(Fn::Sqrt, -1e-16, 0.0, tol), 0.0);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Sqrt, -tol, 0.0, tol), 0.0);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Pow, -1e-16, 0.5, tol), 0.0);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Pow, -1e-16, 3.0, tol), 0.0);
  // A negative beyond the tolerance is a real negative eigenvalue: kept.
  EXPECT_EQ(mm::clamp_to_domain(Fn::Sqrt, -2e-15, 0.0, tol), -2e-15);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Pow, -1.0, 0.5, tol), -1.0);
  // log, pow with p <= 0 and exp are never clamped.
  EXPECT_EQ(mm::clamp_to_domain(Fn::Log, -1e-16, 0.0, tol), -1e-16);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Pow, -1e-16, -1.5, tol), -1e-16);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Pow, -1e-16, 0.0, tol), -1e-16);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Exp, -1e-16, 0.0, tol), -1e-16);
  // Non-negative values pass unchanged.
  for (Fn fn : {Fn::Log, Fn::Sqrt, Fn::Pow, Fn::Exp}) {
    EXPECT_EQ(mm::clamp_to_domain(fn, 0.0, 0.5, tol), 0.0);
    EXPECT_EQ(mm::clamp_to_domain(fn, 2.5, 0.5, tol), 2.5);
  }
  // Zero tolerance clamps nothing.
  EXPECT_EQ(mm::clamp_to_domain(Fn::Sqrt, -1e-300, 0.0, 0.0), -1e-300);
  EXPECT_EQ(mm::clamp_to_domain(Fn::Sqrt, -1e-7f, 0.0f, 1e-6f), 0.0f);
}

TEST(InDomain, MatchesEachFunctionsDomain) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(mm::in_domain(Fn::Log, 1e-300, 0.0));
  EXPECT_FALSE(mm::in_domain(Fn::Log, 0.0, 0.0));
  EXPECT_FALSE(mm::in_domain(Fn::Log, -1.0, 0.0));
  EXPECT_FALSE(mm::in_domain(Fn::Log, nan, 0.0));
  EXPECT_TRUE(mm::in_domain(Fn::Sqrt, 0.0, 0.0));
  EXPECT_TRUE(mm::in_domain(Fn::Sqrt, 4.0, 0.0));
  EXPECT_FALSE(mm::in_domain(Fn::Sqrt, -1e-300, 0.0));
  EXPECT_TRUE(mm::in_domain(Fn::Pow, 0.0, 0.5));
  EXPECT_TRUE(mm::in_domain(Fn::Pow, 0.0, 3.0));
  EXPECT_FALSE(mm::in_domain(Fn::Pow, -1e-300, 0.5));
  EXPECT_FALSE(mm::in_domain(Fn::Pow, 0.0, -1.5));
  EXPECT_FALSE(mm::in_domain(Fn::Pow, 0.0, 0.0));
  EXPECT_TRUE(mm::in_domain(Fn::Pow, 1e-300, -1.5));
  EXPECT_TRUE(mm::in_domain(Fn::Exp, -1e300, 0.0));
  EXPECT_TRUE(mm::in_domain(Fn::Exp, 1e300, 0.0));
  EXPECT_FALSE(mm::in_domain(Fn::Sqrt, -1.0f, 0.0f));
  EXPECT_TRUE(mm::in_domain(Fn::Sqrt, 0.0f, 0.0f));
}

// ---------------------------------------------------------------------------
// adjoint_weights.h

TEST(AdjointWeights, MachineEpsilonMatchesNumericLimits) {
  EXPECT_EQ(mm::machine_epsilon<double>(), std::numeric_limits<double>::epsilon());
  EXPECT_EQ(mm::machine_epsilon<float>(), std::numeric_limits<float>::epsilon());
}

TEST(AdjointWeights, TieTolerance) {
  EXPECT_EQ(mm::tie_tolerance(2.0, int64_t{10}), 10 * kEps * 2.0);
  EXPECT_EQ(mm::tie_tolerance(2.0, int64_t{1}), kEps * 2.0);
  EXPECT_EQ(mm::tie_tolerance(2.0, int64_t{0}), kEps * 2.0);  // n = 0 counts as 1
  EXPECT_EQ(mm::tie_tolerance(0.0, int64_t{5}), 0.0);
  EXPECT_EQ(mm::tie_tolerance(3.0f, int64_t{4}), 4 * std::numeric_limits<float>::epsilon() * 3.0f);
}

TEST(AdjointWeights, EigWeight) {
  const double tol = 1e-12;
  EXPECT_EQ(mm::eig_adjoint_weight(1.0, 3.0, tol), 0.5);
  EXPECT_EQ(mm::eig_adjoint_weight(3.0, 1.0, tol), -0.5);
  EXPECT_EQ(mm::eig_adjoint_weight(-1.0, 3.0, tol), 0.25);
  EXPECT_EQ(mm::eig_adjoint_weight(1.0, 1.0 + 1e-9, tol), 1.0 / ((1.0 + 1e-9) - 1.0));
  // Ties: |gap| <= tol gives 0, on both sides, and exactly at the tolerance.
  EXPECT_EQ(mm::eig_adjoint_weight(2.0, 2.0, tol), 0.0);
  EXPECT_EQ(mm::eig_adjoint_weight(2.0, 2.0, 0.0), 0.0);  // diagonal: 0, not inf
  EXPECT_EQ(mm::eig_adjoint_weight(1.0, 1.0 + 0.5 * tol, tol), 0.0);
  EXPECT_EQ(mm::eig_adjoint_weight(1.0 + 0.5 * tol, 1.0, tol), 0.0);
  EXPECT_EQ(mm::eig_adjoint_weight(0.0, 0.25, 0.25), 0.0);
  EXPECT_EQ(mm::eig_adjoint_weight(0.0, std::nextafter(0.25, 1.0), 0.25),
            1.0 / std::nextafter(0.25, 1.0));
  EXPECT_EQ(mm::eig_adjoint_weight(1.0f, 3.0f, 1e-6f), 0.5f);
  // Entry: weight times the skew part of M.
  EXPECT_EQ(mm::eig_adjoint_entry(5.0, 1.0, 1.0, 3.0, tol), 0.5 * 0.5 * (5.0 - 1.0));
  EXPECT_EQ(mm::eig_adjoint_entry(5.0, 1.0, 1.0, 1.0, tol), 0.0);
}

TEST(AdjointWeights, SvdWeightAccurateForCloseValues) {
  // K_ij = 1 / (s_j^2 - s_i^2). References from mpmath (mp.dps = 50):
  //   1 / (mpf(sj)**2 - mpf(si)**2) at the exact doubles below.
  struct {
    double si, sj, ref;
  } cases[] = {
      {1.0, 2.0, 3.333333333333333333333333e-1},
      {3.0, 1.0, -1.25e-1},
      {1.7, 1.7000000017, 173010366.221390289489783},
      {1.7, 1.7000000000017002, 172990482655.9412786002631},
      {1.7, 1.7000000000000017, 165573515712150.5060553633},
      {1e-150, 2e-150, 3.333333333333333291364278e+299},
      {1e150, 1.000000000001e150, 5.000258138575511276516736e-289},
  };
  for (const auto& c : cases) {
    const double got = mm::svd_adjoint_weight(c.si, c.sj, 0.0);
    EXPECT_LE(relative_error(got, c.ref), kTol)
        << "si=" << c.si << " sj=" << c.sj << " got " << got << " want " << c.ref;
    EXPECT_EQ(mm::svd_adjoint_weight(c.sj, c.si, 0.0), -got);
  }
  // The naive 1 / (sj*sj - si*si) would be off by ~1e-4 relative at the
  // 1e-12 gap; make sure this test would notice that.
  const double naive = 1.0 / (1.7000000000017002 * 1.7000000000017002 - 1.7 * 1.7);
  EXPECT_GT(relative_error(naive, 172990482655.9412786002631), 1e-6);
  // Ties and the diagonal give 0.
  EXPECT_EQ(mm::svd_adjoint_weight(2.0, 2.0, 0.0), 0.0);
  EXPECT_EQ(mm::svd_adjoint_weight(2.0, 2.0 + 1e-13, 1e-12), 0.0);
  EXPECT_EQ(mm::svd_adjoint_weight(0.0, 1e-13, 1e-12), 0.0);
  EXPECT_EQ(mm::svd_adjoint_weight(0.0, 0.0, 0.0), 0.0);
  // Entry: K o (M - M^T) S + S K o (N - N^T), entry (i, j).
  const double k = mm::svd_adjoint_weight(1.0, 2.0, 0.0);
  EXPECT_LE(relative_error(mm::svd_adjoint_entry(5.0, 1.0, 7.0, 3.0, 1.0, 2.0, 0.0),
                           k * ((5.0 - 1.0) * 2.0 + 1.0 * (7.0 - 3.0))),
            kTol);
  // Singular values ~1e-155: K ~ 1e310 overflows, the entry ~1e155 does not.
  const double tiny = 1e-155;
  EXPECT_LE(relative_error(mm::svd_adjoint_entry(5.0, 1.0, 7.0, 3.0, tiny, 2.0 * tiny, 0.0),
                           ((5.0 - 1.0) * 2.0 + 1.0 * (7.0 - 3.0)) / (3.0 * tiny)),
            kTol);
  EXPECT_EQ(mm::svd_adjoint_entry(5.0, 1.0, 7.0, 3.0, 2.0, 2.0, 1e-12), 0.0);
}

TEST(AdjointWeights, PseudoInverse) {
  const double tol = 1e-12;
  EXPECT_EQ(mm::pseudo_inverse(4.0, tol), 0.25);
  EXPECT_EQ(mm::pseudo_inverse(2e-12, tol), 1.0 / 2e-12);
  EXPECT_EQ(mm::pseudo_inverse(tol, tol), 0.0);  // at the tolerance: treated as zero
  EXPECT_EQ(mm::pseudo_inverse(5e-13, tol), 0.0);
  EXPECT_EQ(mm::pseudo_inverse(0.0, tol), 0.0);
  EXPECT_EQ(mm::pseudo_inverse(0.0, 0.0), 0.0);  // never inf
  EXPECT_EQ(mm::pseudo_inverse(-1e-20, tol), 0.0);
  EXPECT_EQ(mm::pseudo_inverse(1e-300, 0.0), 1.0 / 1e-300);
  EXPECT_EQ(mm::pseudo_inverse(4.0f, 1e-6f), 0.25f);
}

}  // namespace
