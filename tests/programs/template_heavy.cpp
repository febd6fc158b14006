// Template-heavy C++17 program for the sigmalloc `programs` suite.
//
// The point is mostly the compilation: cc1plus, as and ld all run with
// libsigmalloc.so preloaded and allocate heavily while instantiating the
// templates below.  The resulting program is run too, and its output must be
// identical to the one built and run on glibc's malloc: it depends only on
// fixed seeds, never on addresses or hash-table iteration order.

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace th {

// ---------------------------------------------------------------------------
// Compile-time computation
// ---------------------------------------------------------------------------
template <unsigned N>
struct Fib {
  static constexpr std::uint64_t value = Fib<N - 1>::value + Fib<N - 2>::value;
};
template <>
struct Fib<0> {
  static constexpr std::uint64_t value = 0;
};
template <>
struct Fib<1> {
  static constexpr std::uint64_t value = 1;
};

constexpr bool is_prime(unsigned n) {
  if (n < 2) return false;
  for (unsigned d = 2; d * d <= n; ++d)
    if (n % d == 0) return false;
  return true;
}

template <std::size_t N>
constexpr std::array<unsigned, N> first_primes() {
  std::array<unsigned, N> out{};
  unsigned found = 0;
  for (unsigned n = 2; found < N; ++n)
    if (is_prime(n)) out[found++] = n;
  return out;
}

constexpr auto kPrimes = first_primes<200>();
static_assert(kPrimes[0] == 2 && kPrimes[199] == 1223, "primes");
static_assert(Fib<90>::value == 2880067194370816120ULL, "fib");

template <std::size_t... I>
constexpr std::uint64_t sum_squares(std::index_sequence<I...>) {
  return ((std::uint64_t(I) * I) + ... + 0);
}
static_assert(sum_squares(std::make_index_sequence<100>{}) == 328350, "sq");

// Type list machinery, instantiated recursively.
template <typename... Ts>
struct TypeList {};

template <typename L>
struct Length;
template <typename... Ts>
struct Length<TypeList<Ts...>> : std::integral_constant<std::size_t, sizeof...(Ts)> {};

template <typename L, typename T>
struct Append;
template <typename... Ts, typename T>
struct Append<TypeList<Ts...>, T> {
  using type = TypeList<Ts..., T>;
};

template <std::size_t N>
struct Build {
  using type = typename Append<typename Build<N - 1>::type,
                               std::integral_constant<std::size_t, N>>::type;
};
template <>
struct Build<0> {
  using type = TypeList<>;
};

template <typename L>
struct SumList;
template <typename... Ts>
struct SumList<TypeList<Ts...>>
    : std::integral_constant<std::size_t, (Ts::value + ... + 0)> {};

using Big = Build<120>::type;
static_assert(Length<Big>::value == 120, "len");
static_assert(SumList<Big>::value == 7260, "sum");

// ---------------------------------------------------------------------------
// Deterministic random numbers
// ---------------------------------------------------------------------------
struct Lcg {
  std::uint64_t s;
  explicit Lcg(std::uint64_t seed) : s(seed) {}
  std::uint32_t next() {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<std::uint32_t>(s >> 33);
  }
  std::uint32_t below(std::uint32_t n) { return next() % n; }
};

std::string word(Lcg& r, unsigned lo = 3, unsigned hi = 12) {
  unsigned n = lo + r.below(hi - lo + 1);
  std::string s;
  for (unsigned i = 0; i < n; ++i) s += static_cast<char>('a' + r.below(26));
  return s;
}

std::uint64_t fnv(const std::string& s, std::uint64_t h = 1469598103934665603ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// ---------------------------------------------------------------------------
// A little expression language over std::variant
// ---------------------------------------------------------------------------
struct Expr;
using ExprPtr = std::shared_ptr<Expr>;
struct Num { long long v; };
struct Var { std::string name; };
struct Bin { char op; ExprPtr l, r; };
struct Let { std::string name; ExprPtr value, body; };
struct Expr { std::variant<Num, Var, Bin, Let> node; };

template <class... Fs>
struct Overloaded : Fs... { using Fs::operator()...; };
template <class... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

using Env = std::map<std::string, long long>;

long long eval(const ExprPtr& e, Env env) {
  return std::visit(
      Overloaded{
          [](const Num& n) { return n.v; },
          [&](const Var& v) {
            auto it = env.find(v.name);
            return it == env.end() ? 0LL : it->second;
          },
          [&](const Bin& b) {
            long long l = eval(b.l, env), r = eval(b.r, env);
            switch (b.op) {
              case '+': return l + r;
              case '-': return l - r;
              case '*': return (l * r) % 1000003;
              default: return r == 0 ? l : l % r;
            }
          },
          [&](const Let& l) {
            Env inner = env;
            inner[l.name] = eval(l.value, env);
            return eval(l.body, inner);
          }},
      e->node);
}

std::string show(const ExprPtr& e) {
  return std::visit(
      Overloaded{
          [](const Num& n) { return std::to_string(n.v); },
          [](const Var& v) { return v.name; },
          [](const Bin& b) {
            return "(" + show(b.l) + b.op + show(b.r) + ")";
          },
          [](const Let& l) {
            return "let " + l.name + "=" + show(l.value) + " in " + show(l.body);
          }},
      e->node);
}

ExprPtr gen(Lcg& r, int depth, std::vector<std::string>& scope) {
  unsigned pick = depth <= 0 ? r.below(2) : r.below(5);
  switch (pick) {
    case 0:
      return std::make_shared<Expr>(Expr{Num{static_cast<long long>(r.below(100))}});
    case 1:
      if (!scope.empty())
        return std::make_shared<Expr>(Expr{Var{scope[r.below(scope.size())]}});
      return std::make_shared<Expr>(Expr{Num{1}});
    case 4: {
      std::string name = word(r, 1, 3);
      ExprPtr value = gen(r, depth - 1, scope);
      scope.push_back(name);
      ExprPtr body = gen(r, depth - 1, scope);
      scope.pop_back();
      return std::make_shared<Expr>(Expr{Let{name, value, body}});
    }
    default: {
      static const char ops[] = "+-*%";
      return std::make_shared<Expr>(
          Expr{Bin{ops[r.below(4)], gen(r, depth - 1, scope), gen(r, depth - 1, scope)}});
    }
  }
}

// ---------------------------------------------------------------------------
// Generic containers and algorithms
// ---------------------------------------------------------------------------
template <typename K, typename V, template <typename...> class Map>
std::uint64_t fill_and_digest(Lcg& r, std::size_t n,
                              const std::function<K(Lcg&)>& mk,
                              const std::function<V(const K&)>& mv) {
  Map<K, V> m;
  for (std::size_t i = 0; i < n; ++i) {
    K k = mk(r);
    m[k] = mv(k);
  }
  // Erase about a third, then digest in key order.
  std::vector<K> keys;
  keys.reserve(m.size());
  for (auto& kv : m) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  for (std::size_t i = 0; i < keys.size(); i += 3) m.erase(keys[i]);
  std::vector<std::pair<K, V>> items(m.begin(), m.end());
  std::sort(items.begin(), items.end());
  std::ostringstream os;
  for (auto& kv : items) os << kv.first << '=' << kv.second << ';';
  return fnv(os.str()) ^ m.size();
}

template <typename T, typename... Rest>
struct Pipeline {
  static std::vector<T> run(std::vector<T> v) { return v; }
};

template <typename T, typename F, typename... Rest>
struct Pipeline<T, F, Rest...> {
  static std::vector<T> run(std::vector<T> v) {
    F f;
    std::vector<T> out;
    out.reserve(v.size());
    for (auto& x : v) {
      if (auto y = f(x)) out.push_back(*y);
    }
    return Pipeline<T, Rest...>::run(std::move(out));
  }
};

struct Double { std::optional<long> operator()(long x) const { return x * 2; } };
struct DropOdd3 {
  std::optional<long> operator()(long x) const {
    if ((x / 2) % 3 == 1) return std::nullopt;
    return x;
  }
};
struct AddPrime {
  std::optional<long> operator()(long x) const { return x + kPrimes[x % 200]; }
};

template <typename Tuple, std::size_t... I>
std::string tuple_str(const Tuple& t, std::index_sequence<I...>) {
  std::ostringstream os;
  ((os << (I ? "," : "") << std::get<I>(t)), ...);
  return os.str();
}

template <typename... Ts>
std::string tuple_str(const std::tuple<Ts...>& t) {
  return "(" + tuple_str(t, std::index_sequence_for<Ts...>{}) + ")";
}

}  // namespace th

int main() {
  using namespace th;
  std::cout << "fib90 " << Fib<90>::value << "\n";
  std::cout << "prime199 " << kPrimes[199] << " sumlist " << SumList<Big>::value << "\n";

  // Expressions.
  Lcg r(12345);
  std::uint64_t h = 0;
  long long total = 0;
  for (int i = 0; i < 4000; ++i) {
    std::vector<std::string> scope;
    ExprPtr e = gen(r, 7, scope);
    total += eval(e, {});
    h = fnv(show(e), h);
  }
  std::cout << "expr " << total << " " << std::hex << h << std::dec << "\n";

  // Maps: std::map and std::unordered_map with string and int keys.
  std::function<std::string(Lcg&)> mkstr = [](Lcg& g) { return word(g); };
  std::function<long(const std::string&)> strval = [](const std::string& s) {
    return static_cast<long>(fnv(s) % 100000);
  };
  std::function<long(Lcg&)> mkint = [](Lcg& g) { return static_cast<long>(g.below(1u << 20)); };
  std::function<std::string(const long&)> intval = [](const long& k) {
    return std::to_string(k * 7) + "x";
  };
  Lcg r2(777);
  std::cout << "map-str " << std::hex
            << fill_and_digest<std::string, long, std::map>(r2, 200000, mkstr, strval)
            << "\n";
  std::cout << "umap-str "
            << fill_and_digest<std::string, long, std::unordered_map>(r2, 200000, mkstr, strval)
            << "\n";
  std::cout << "map-int "
            << fill_and_digest<long, std::string, std::map>(r2, 200000, mkint, intval)
            << "\n";
  std::cout << "umap-int "
            << fill_and_digest<long, std::string, std::unordered_map>(r2, 200000, mkint, intval)
            << std::dec << "\n";

  // Pipelines of function objects.
  std::vector<long> v(300000);
  std::iota(v.begin(), v.end(), 0L);
  auto p = Pipeline<long, Double, DropOdd3, AddPrime, Double>::run(v);
  std::cout << "pipeline " << p.size() << " "
            << std::accumulate(p.begin(), p.end(), 0LL) << "\n";

  // std::function callbacks stored in containers.
  std::map<std::string, std::function<long(long)>> ops;
  for (unsigned i = 0; i < 50; ++i) {
    ops["op" + std::to_string(i)] = [i](long x) { return (x * (i + 1) + kPrimes[i]) % 1000003; };
  }
  long acc = 1;
  for (int round = 0; round < 2000; ++round)
    for (auto& kv : ops) acc = kv.second(acc);
  std::cout << "functions " << acc << "\n";

  // Lists, sets and tuples.
  Lcg r3(4242);
  std::list<std::tuple<int, std::string, double>> lst;
  for (int i = 0; i < 100000; ++i)
    lst.emplace_back(static_cast<int>(r3.below(1000)), word(r3), r3.below(10000) / 8.0);
  lst.sort();
  std::set<std::string> uniq;
  for (auto& t : lst) uniq.insert(std::get<1>(t));
  std::cout << "list " << lst.size() << " " << uniq.size() << " "
            << tuple_str(lst.front()) << " " << tuple_str(lst.back()) << "\n";

  std::ostringstream big;
  big << std::fixed << std::setprecision(3);
  for (auto& t : lst) big << tuple_str(t) << '\n';
  std::cout << "text " << big.str().size() << " " << std::hex << fnv(big.str())
            << std::dec << "\n";
  return 0;
}
