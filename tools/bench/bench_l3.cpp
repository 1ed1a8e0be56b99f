// Time and peak memory of one L3 layer's forward + backward (rms_norm, lookup, w_up, rms_norm, w_mix) with
// l3lab's ragged segment kernel against the reference's padded gather, CPU float32 (REFERENCE.md, known
// defect 2; L3.md, "Cost model") or CUDA (docs/cuda.md).
//
//   build/tools/bench/bench_l3                        # N = 4096 tokens (8 x 512), C = 256, ~1-2 minutes
//   build/tools/bench/bench_l3 --tokens 16384 --width 512 --reps 5 --cap-gib 12
//   build/tools/bench/bench_l3 --device cuda --tokens 65536 --seq 2048 --width 768 --reps 10 --cap-gib 100
//
// --device cuda: the layer as training runs it there - bfloat16 tables, bfloat16 autocast around the layer,
// the CUDA segment kernel; the padded gather gets bfloat16 queries, as the reference's bmm under autocast.
// Times are between device synchronisations; peak memory is the caching allocator's peak minus what the
// inputs hold (torch.cuda.max_memory_allocated), and the padded estimate counts 2-byte elements.
//
// Token stream: Zipf(1.1) over ranks, BOS (the last id) starting documents of 500..1500 tokens; the first
// `--sample` tokens are the allocation sample, the batch is the next N tokens.
//   uniform k   every token owns exactly k rows. The table is held at n_emb = 4 x 32768 rows (the lzw table's
//               size) by shrinking the vocabulary to V = n_emb / k, so every batch's padded width is k.
//   lzw         paper Algorithm 1 on the sample's BOS pieces, V = 32768, n_emb = 4V, k_max = 512; any batch
//               holding a frequent token pads to 512.
// Every configuration runs in a fresh forked child; peak memory is the child's max RSS (wait4) minus that of a
// baseline child that only builds the same inputs. The parent never touches libtorch, so no thread pool exists
// at fork time. A padded run whose estimate (N x width x C x 4 bytes x 4: the gathered keys and values and
// their gradients) exceeds the cap is skipped and its estimate printed instead.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "modules/l3/allocation.h"
#include "modules/torch/cuda.h"
#include "modules/torch/gpt.h"
#include "modules/torch/l3_segment.h"

namespace {

using l3lab::l3::TokenSequence;
namespace mod = l3lab::modules;

constexpr int64_t kVocab = 32768;
constexpr int64_t kNEmb = 4 * kVocab;
constexpr double kZipfExponent = 1.1;
constexpr uint64_t kSeed = 20260131;
constexpr double kMiB = 1024.0 * 1024.0, kGiB = kMiB * 1024.0;

struct Settings {
    int64_t tokens = 4096, width = 256, reps = 3, sample = 1'000'000, seq_len = 512;
    double cap_gib = 12.0;
    bool cuda = false;
};

// Zipf(1.1) ranks over ids 0..vocab-2 (id = rank - 1), the last id as BOS starting each document.
std::vector<int32_t> zipf_stream(int64_t vocab, int64_t n_tokens, uint64_t seed) {
    std::vector<double> cdf(size_t(vocab - 1));
    double sum = 0;
    for (size_t i = 0; i < cdf.size(); ++i) cdf[i] = sum += std::pow(double(i + 1), -kZipfExponent);
    for (double& c : cdf) c /= sum;
    const auto bos = int32_t(vocab - 1);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::uniform_int_distribution<int64_t> doc_length(500, 1500);
    std::vector<int32_t> stream;
    stream.reserve(size_t(n_tokens));
    while (int64_t(stream.size()) < n_tokens) {
        stream.push_back(bos);
        for (int64_t i = doc_length(rng) - 1; i > 0 && int64_t(stream.size()) < n_tokens; --i) {
            auto it = std::lower_bound(cdf.begin(), cdf.end(), uniform(rng));
            stream.push_back(int32_t(std::min<ptrdiff_t>(it - cdf.begin(), ptrdiff_t(cdf.size()) - 1)));
        }
    }
    return stream;
}

struct Config {
    std::string name;
    int64_t k_max = 0, vocab = 0;
    std::vector<int64_t> rows;       // per token id
    std::vector<int32_t> batch;      // N token ids
    double rows_per_occurrence = 0;  // over the batch, frequency-weighted
    int64_t padded_width = 0;        // the batch's largest row count
};

Config uniform_config(int64_t k, const Settings& s) {
    Config c;
    c.name = "uniform";
    c.k_max = k;
    c.vocab = kNEmb / k;
    c.rows.assign(size_t(c.vocab), k);
    c.batch = zipf_stream(c.vocab, s.tokens, kSeed + uint64_t(k));
    return c;
}

Config lzw_config(const Settings& s, double& sample_rows_per_occurrence) {
    Config c;
    c.name = "lzw";
    c.k_max = 512;
    c.vocab = kVocab;
    const std::vector<int32_t> stream = zipf_stream(kVocab, s.sample + s.tokens, kSeed);
    const TokenSequence sample(stream.begin(), stream.begin() + s.sample);
    const auto pieces = l3lab::l3::split_at_bos({sample}, int32_t(kVocab - 1));
    const auto allocation = l3lab::l3::lzw_allocation(pieces, kVocab, kNEmb, c.k_max);
    for (const std::string& w : allocation.warnings) std::printf("warning: %s\n", w.c_str());
    c.rows = allocation.rows;
    c.batch.assign(stream.begin() + s.sample, stream.end());
    sample_rows_per_occurrence = l3lab::l3::rows_per_occurrence(c.rows, {sample});
    return c;
}

void finish(Config& c) {
    c.rows_per_occurrence = l3lab::l3::rows_per_occurrence(c.rows, {TokenSequence(c.batch)});
    c.padded_width = 0;
    for (int32_t t : c.batch) c.padded_width = std::max(c.padded_width, c.rows[size_t(t)]);
}

// --- what runs inside a child ------------------------------------------------------------------

struct Inputs {
    mod::L3Layer layer{nullptr};
    at::Tensor x, ids, grad_out;
};

Inputs build_inputs(const Config& c, const Settings& s) {
    at::manual_seed(0);
    const int64_t C = s.width, T = s.seq_len, B = s.tokens / T;
    mod::L3LayerOptions o;
    o.n_emb = std::accumulate(c.rows.begin(), c.rows.end(), int64_t{0});
    o.d_up = 4 * C;  // the reference's default, 4 x model_dim
    o.d_emb = C;
    o.k_max = c.k_max;
    o.tie_kv = true;
    Inputs in;
    in.layer = mod::L3Layer(o, C);
    {
        torch::NoGradGuard no_grad;
        const double bound = std::sqrt(3.0 / double(C));
        in.layer->kv_weight.normal_(0.0, 1.0);
        in.layer->w_up->weight.uniform_(-bound, bound);
        in.layer->w_mix->weight.normal_(0.0, 0.02);  // not zero, so every parameter gets a real gradient
    }
    const auto bounds = l3lab::l3::bounds_from_allocation(c.rows);
    in.layer->set_bounds(at::tensor(bounds, at::kLong));
    std::vector<int64_t> ids(c.batch.begin(), c.batch.end());
    in.ids = at::tensor(ids, at::kLong).view({B, T});
    in.x = at::randn({B, T, C});
    in.grad_out = at::randn({B, T, C});
    if (s.cuda) {  // as training on CUDA: bfloat16 table, everything on the device
        const at::Device device(at::kCUDA, 0);
        in.layer->to(device);
        torch::NoGradGuard no_grad;
        in.layer->kv_weight.set_data(in.layer->kv_weight.to(at::kBFloat16));
        in.ids = in.ids.to(device);
        in.x = in.x.to(device);
        in.grad_out = in.grad_out.to(device);
    }
    in.x.requires_grad_(true);
    return in;
}

// L3LayerImpl::forward with the reference's padded gather in place of the segment kernel.
at::Tensor padded_layer_forward(mod::L3LayerImpl& layer, const at::Tensor& x, const at::Tensor& ids) {
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    at::Tensor q = mod::rms_norm(x).reshape({B * T, C});
    if (q.is_cuda()) q = q.to(at::kBFloat16);  // the reference's bmm under bfloat16 autocast
    at::Tensor a = mod::l3_padded_attention(q, layer.keys(), layer.values(), ids.reshape({B * T}), layer.bounds);
    at::Tensor up = mod::rms_norm(layer.w_up(a.view({B, T, -1})));
    return layer.w_mix(at::cat({up, x}, -1));
}

enum class Kernel { None, Segment, Padded };

struct Measurement {
    double ms = 0;
    double device_peak_mib = 0;  // CUDA only: allocator peak above the inputs
};

// Median milliseconds of forward + backward over `reps` runs after one warm-up; 0 for Kernel::None.
Measurement measure(const Config& c, const Settings& s, Kernel kernel) {
    Inputs in = build_inputs(c, s);
    if (kernel == Kernel::None) return {};
    int64_t base_bytes = 0;
    if (s.cuda) {
        mod::cuda_synchronize();
        mod::cuda_reset_peak_memory();
        base_bytes = mod::cuda_peak_memory_bytes();  // right after a reset: what the inputs hold
    }
    std::vector<double> ms;
    for (int64_t rep = 0; rep <= s.reps; ++rep) {
        in.layer->zero_grad(/*set_to_none=*/true);
        in.x.mutable_grad() = at::Tensor();
        const auto t0 = std::chrono::steady_clock::now();
        {
            const mod::Bf16Autocast autocast(c10::DeviceType::CUDA, s.cuda);
            at::Tensor out = kernel == Kernel::Segment ? in.layer->forward(in.x, in.ids)
                                                       : padded_layer_forward(*in.layer, in.x, in.ids);
            (out.to(at::kFloat) * in.grad_out).sum().backward();
        }
        if (s.cuda) mod::cuda_synchronize();
        const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (rep > 0) ms.push_back(elapsed);  // rep 0 is the warm-up
    }
    std::sort(ms.begin(), ms.end());
    Measurement m;
    m.ms = ms[ms.size() / 2];
    if (s.cuda) m.device_peak_mib = double(mod::cuda_peak_memory_bytes() - base_bytes) / kMiB;
    return m;
}

// --- the parent: fork, collect, print ----------------------------------------------------------

struct ChildResult {
    double ms = 0;
    double max_rss_mib = 0;
    double device_peak_mib = 0;
    std::string error;
};

ChildResult run_in_child(const std::function<Measurement()>& work) {
    int fds[2];
    if (pipe(fds) != 0) return {0, 0, 0, std::string("pipe: ") + std::strerror(errno)};
    const pid_t pid = fork();
    if (pid < 0) return {0, 0, 0, std::string("fork: ") + std::strerror(errno)};
    if (pid == 0) {
        close(fds[0]);
        char message[512];
        int code = 0;
        try {
            const Measurement m = work();
            std::snprintf(message, sizeof message, "%.17g %.17g", m.ms, m.device_peak_mib);
        } catch (const c10::Error& e) {  // libtorch's message without its C++ backtrace
            std::snprintf(message, sizeof message, "!%s", e.what_without_backtrace());
            code = 1;
        } catch (const std::exception& e) {
            std::snprintf(message, sizeof message, "!%s", e.what());
            code = 1;
        }
        const ssize_t written = write(fds[1], message, std::strlen(message));
        (void)written;
        close(fds[1]);
        _exit(code);
    }
    close(fds[1]);
    std::string message;
    char buffer[512];
    for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) message.append(buffer, size_t(n));
    close(fds[0]);
    int status = 0;
    struct rusage usage {};
    wait4(pid, &status, 0, &usage);
    ChildResult r;
    r.max_rss_mib = double(usage.ru_maxrss) * 1024.0 / kMiB;  // ru_maxrss is in KiB on Linux
    if (!message.empty() && message[0] == '!') {
        r.error = message.substr(1);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || message.empty()) {
        r.error = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status)) : "child failed";
    } else {
        char* end = nullptr;
        r.ms = std::strtod(message.c_str(), &end);
        r.device_peak_mib = std::strtod(end, nullptr);
    }
    return r;
}

std::string cell(const ChildResult& r, double baseline_mib, bool memory, bool cuda) {
    char text[64];
    if (!r.error.empty()) return "failed";
    if (memory && cuda) std::snprintf(text, sizeof text, "%.0f", r.device_peak_mib);
    else if (memory) std::snprintf(text, sizeof text, "%.0f", r.max_rss_mib - baseline_mib);
    else std::snprintf(text, sizeof text, "%.0f", r.ms);
    return text;
}

int64_t parse_int(const char* flag, const char* value) {
    char* end = nullptr;
    const long long v = std::strtoll(value, &end, 10);
    if (!end || *end || v <= 0) {
        std::fprintf(stderr, "bench_l3: %s needs a positive integer, got '%s'\n", flag, value);
        std::exit(2);
    }
    return v;
}

Settings parse(int argc, char** argv) {
    Settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (i + 1 >= argc) {
            std::fprintf(stderr, "bench_l3: %s needs a value (flags: --tokens --width --reps --sample --seq "
                                 "--cap-gib --device cpu|cuda)\n", flag.c_str());
            std::exit(2);
        }
        const char* value = argv[++i];
        if (flag == "--tokens") s.tokens = parse_int("--tokens", value);
        else if (flag == "--width") s.width = parse_int("--width", value);
        else if (flag == "--reps") s.reps = parse_int("--reps", value);
        else if (flag == "--sample") s.sample = parse_int("--sample", value);
        else if (flag == "--seq") s.seq_len = parse_int("--seq", value);
        else if (flag == "--cap-gib") s.cap_gib = std::strtod(value, nullptr);
        else if (flag == "--device" && (std::string(value) == "cpu" || std::string(value) == "cuda")) s.cuda = std::string(value) == "cuda";
        else {
            std::fprintf(stderr, "bench_l3: unknown flag %s (flags: --tokens --width --reps --sample --seq "
                                 "--cap-gib --device cpu|cuda)\n", flag.c_str());
            std::exit(2);
        }
    }
    if (s.tokens % s.seq_len != 0) {
        std::fprintf(stderr, "bench_l3: --tokens (%lld) must be a multiple of --seq (%lld)\n", (long long)s.tokens,
                     (long long)s.seq_len);
        std::exit(2);
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    const Settings s = parse(argc, argv);
    if (s.cuda) {  // asked in a child: the parent never initialises CUDA (children must, after the fork)
        const ChildResult probe = run_in_child([] { return Measurement{mod::cuda_usable() ? 1.0 : 0.0, 0.0}; });
        if (!probe.error.empty() || probe.ms != 1.0) {
            std::fprintf(stderr, "bench_l3: --device cuda needs this build's CUDA kernels and a visible GPU (%s)\n",
                         probe.error.empty() ? (mod::cuda_kernels_built() ? "no device" : "kernels not built")
                                             : probe.error.c_str());
            return 2;
        }
    }
    double sample_rpo = 0;
    std::vector<Config> configs = {uniform_config(8, s), uniform_config(64, s), uniform_config(512, s),
                                   lzw_config(s, sample_rpo)};
    for (Config& c : configs) finish(c);

    std::printf("One L3 layer, forward + backward, %s, tied K = V: C = %lld, d_up = 4C = %lld, "
                "N = %lld tokens (%lld x %lld), n_emb = %lld rows\n",
                s.cuda ? "CUDA device 0, bfloat16 table and autocast" : "CPU float32",  // the parent stays off CUDA
                (long long)s.width, (long long)(4 * s.width), (long long)s.tokens, (long long)(s.tokens / s.seq_len),
                (long long)s.seq_len, (long long)kNEmb);
    std::printf("Zipf(%.1f) tokens; uniform k: V = n_emb / k; lzw: V = %lld, k_max = 512, sample %lld tokens\n",
                kZipfExponent, (long long)kVocab, (long long)s.sample);
    if (s.cuda)
        std::printf("time: median of %lld after 1 warm-up, between device synchronisations; peak: the caching "
                    "allocator's peak above the inputs\n\n", (long long)s.reps);
    else
        std::printf("time: median of %lld after 1 warm-up, libtorch's default threads (%ld cores); peak: child max "
                    "RSS minus an inputs-only child\n\n", (long long)s.reps, sysconf(_SC_NPROCESSORS_ONLN));

    const char* header = "%-10s %6s %16s %11s %17s %11s %17s\n";
    std::printf(header, "allocation", "k_max", "rows/occurrence", "segment ms", "segment peak MiB", "padded ms",
                "padded peak MiB");
    for (const Config& c : configs) {
        const ChildResult base = run_in_child([&] { return measure(c, s, Kernel::None); });
        const ChildResult seg = run_in_child([&] { return measure(c, s, Kernel::Segment); });
        const double element_bytes = s.cuda ? 2.0 : 4.0;
        const double estimate_gib = double(s.tokens) * double(c.padded_width) * double(s.width) * element_bytes * 4.0 / kGiB;
        std::string pad_ms, pad_mib;
        if (estimate_gib > s.cap_gib) {
            char text[64];
            std::snprintf(text, sizeof text, "would need ~%.0f GiB", estimate_gib);
            pad_ms = "-";
            pad_mib = text;
        } else {
            const ChildResult pad = run_in_child([&] { return measure(c, s, Kernel::Padded); });
            pad_ms = cell(pad, base.max_rss_mib, false, s.cuda);
            pad_mib = cell(pad, base.max_rss_mib, true, s.cuda);
            if (!pad.error.empty()) std::printf("padded %s k_max %lld: %s\n", c.name.c_str(), (long long)c.k_max,
                                                pad.error.c_str());
        }
        if (!seg.error.empty()) std::printf("segment %s k_max %lld: %s\n", c.name.c_str(), (long long)c.k_max,
                                            seg.error.c_str());
        char rpo[32];
        std::snprintf(rpo, sizeof rpo, "%.1f", c.rows_per_occurrence);
        std::printf(header, c.name.c_str(), std::to_string(c.k_max).c_str(), rpo,
                    cell(seg, base.max_rss_mib, false, s.cuda).c_str(), cell(seg, base.max_rss_mib, true, s.cuda).c_str(),
                    pad_ms.c_str(), pad_mib.c_str());
        std::fflush(stdout);
    }
    const Config& lzw = configs.back();
    std::printf("\nlzw rows per occurrence (frequency-weighted): %.1f over the %lld-token sample, %.1f over the "
                "batch; padded width of the batch: %lld\n",
                sample_rpo, (long long)s.sample, lzw.rows_per_occurrence, (long long)lzw.padded_width);
    std::printf("padded estimate = N x width x C x 4 bytes (2 on CUDA) x 4; at the paper's scale (N = 8 x 2048, C = 768, "
                "width 512) it is ~%.0f GiB per L3 layer\n",
                8.0 * 2048 * 512 * 768 * 4 * 4 / kGiB);
    return 0;
}
