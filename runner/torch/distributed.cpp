#include "runner/torch/distributed.h"

#include <ATen/ATen.h>
#include <c10/util/Logging.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <stdexcept>
#include <thread>

#include "runner/util/format.h"

#include "runner/torch/backends.h"

using nlohmann::json;

namespace l3lab::dist {

namespace {

using Clock = std::chrono::steady_clock;

// The launch this process joined (l3lab_torch_distributed "init"); kept for the life of the process.
struct Session {
    std::string launcher, master_addr, store_prefix;
    int master_port = 0;
    bool agent_store = false;
    int rank = 0, world_size = 1, local_rank = 0;
    std::chrono::milliseconds timeout{600000};
    c10::intrusive_ptr<c10d::Store> tcp_store;  // the rendezvous server's (or torchrun agent's) store
    c10::intrusive_ptr<c10d::Store> store;      // this launch's keys: l3lab/<prefix>/
    json ranks = json::array();                 // per rank: host, pid, local_rank
    long long gathers = 0;                      // store gathers so far (the same sequence on every rank)
    int groups = 0;                             // process groups made so far
};

Session* g_session = nullptr;

std::string who(const Session& s) { return "rank " + std::to_string(s.rank) + " of " + std::to_string(s.world_size); }

std::string seconds(double s) { return util::fixed(s, 1) + " s"; }

std::string reason(const std::exception& e) {
    if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
    return e.what();
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::string rank_list(const std::vector<int>& ranks) {
    std::string out;
    for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
    return out;
}

std::runtime_error store_failure(const Session& s, const std::string& what, const std::exception& e, double waited) {
    return std::runtime_error(who(s) + ": " + what + " failed after " + seconds(waited) + ": " + reason(e) +
                              " (the rendezvous store at " + s.master_addr + ":" + std::to_string(s.master_port) +
                              " is gone: rank 0 died?)");
}

// Waits until every rank has set `prefix + rank`; on timeout names the ranks that did not.
void wait_for_ranks(Session& s, const std::string& prefix, const std::string& what) {
    std::vector<std::string> keys;
    for (int r = 0; r < s.world_size; ++r) keys.push_back(prefix + std::to_string(r));
    const auto start = Clock::now();
    try {
        s.store->wait(keys, s.timeout);
    } catch (const std::exception& e) {
        std::vector<int> missing;
        try {
            for (int r = 0; r < s.world_size; ++r)
                if (!s.store->check({keys[static_cast<size_t>(r)]})) missing.push_back(r);
        } catch (const std::exception&) {
            // the store itself is gone (rank 0, which hosts it, died): report the first error
        }
        const double waited = std::chrono::duration<double>(Clock::now() - start).count();
        if (!missing.empty())
            throw std::runtime_error(who(s) + ": " + what + ": rank" + (missing.size() > 1 ? "s " : " ") +
                                     rank_list(missing) + " did not answer within " + seconds(waited) +
                                     " (distributed.timeout_s = " + seconds(s.timeout.count() / 1000.0) +
                                     "); a rank died, hung, or was never started");
        throw store_failure(s, what, e, waited);
    }
}

// Every rank's value, through the store, in rank order. Then every rank acknowledges; the rank that
// hosts the store waits for all acknowledgements, so that it cannot exit (say, on an error the others
// are about to read) and take the store with it while a rank still reads. Each rank deletes its keys of
// two gathers ago: by then every rank has read them and the host has seen every acknowledgement.
std::vector<std::string> store_gather(Session& s, const std::string& value, const std::string& what) {
    const long long n = s.gathers++;
    const std::string prefix = "gather/" + std::to_string(n) + "/", me = std::to_string(s.rank);
    const bool host = s.rank == 0 && !s.agent_store;
    const auto start = Clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
    try {
        if (n >= 2) {
            const std::string old = "gather/" + std::to_string(n - 2) + "/";
            s.store->deleteKey(old + me);
            s.store->deleteKey(old + "ack/" + me);
        }
        s.store->set(prefix + me, bytes(value));
    } catch (const std::exception& e) {
        throw store_failure(s, what, e, elapsed());
    }
    wait_for_ranks(s, prefix, what);
    std::vector<std::string> values;
    try {
        for (int r = 0; r < s.world_size; ++r) values.push_back(text(s.store->get(prefix + std::to_string(r))));
        s.store->set(prefix + "ack/" + me, bytes("1"));
    } catch (const std::exception& e) {
        throw store_failure(s, what, e, elapsed());
    }
    if (host) wait_for_ranks(s, prefix + "ack/", what + " (acknowledgements)");
    return values;
}

std::string host_name() {
    char buf[256] = {0};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
    return buf;
}

// op "init": connect to (or, on rank 0, host) the TCPStore, meet every rank, compare the config hashes.
// Exit code 2 for a config mismatch, 1 for a rank that does not arrive or a store that cannot be made.
int init(const json& request, json& reply) {
    if (g_session) {
        reply["error"] = "the distributed session is already initialised";
        return 1;
    }
    // c10d logs every failed socket wait as a warning with a C++ backtrace; our own errors say what
    // happened. TORCH_CPP_LOG_LEVEL=WARNING (or INFO) brings them back.
    ::setenv("TORCH_CPP_LOG_LEVEL", "ERROR", /*overwrite=*/0);
    c10::initLogging();
    auto s = std::make_unique<Session>();
    s->launcher = request.at("launcher");
    s->rank = request.at("rank");
    s->world_size = request.at("world_size");
    s->local_rank = request.at("local_rank");
    s->master_addr = request.at("master_addr");
    s->master_port = request.at("master_port");
    s->agent_store = request.at("agent_store");
    s->store_prefix = request.at("store_prefix");
    s->timeout = std::chrono::milliseconds(static_cast<long long>(request.at("timeout_s").get<double>() * 1000.0));
    const std::string config_sha = request.at("config_sha256");
    const std::string address = s->master_addr + ":" + std::to_string(s->master_port);

    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(s->master_port);
    options.isServer = s->rank == 0 && !s->agent_store;  // torchrun's agent hosts its own store
    options.waitWorkers = false;                          // the join below names whoever is missing
    options.timeout = s->timeout;
    try {
        s->tcp_store = c10::make_intrusive<c10d::TCPStore>(s->master_addr, options);
    } catch (const std::exception& e) {
        reply["error"] = who(*s) + (options.isServer ? ": cannot host the rendezvous store on port " +
                                                           std::to_string(s->master_port) + " (in use? set MASTER_PORT): "
                                                     : ": cannot reach the rendezvous store at " + address + ": ") +
                         reason(e);
        return 1;
    }
    s->store = c10::make_intrusive<c10d::PrefixStore>("l3lab/" + s->store_prefix, s->tcp_store);

    const json me = {{"host", host_name()}, {"pid", static_cast<long long>(::getpid())}, {"local_rank", s->local_rank},
                     {"config_sha256", config_sha}};
    std::vector<std::string> all;
    try {
        all = store_gather(*s, me.dump(), "joining the rendezvous at " + address);
    } catch (const std::exception& e) {
        reply["error"] = e.what();
        return 1;
    }
    std::map<std::string, std::vector<int>> by_config;
    for (int r = 0; r < s->world_size; ++r) {
        json theirs = json::parse(all[static_cast<size_t>(r)]);
        by_config[theirs.at("config_sha256")].push_back(r);
        theirs.erase("config_sha256");
        s->ranks.push_back(theirs);
    }
    if (by_config.size() > 1) {
        std::string list;
        for (const auto& [sha, ranks] : by_config)
            list += (list.empty() ? "" : "; ") + std::string(ranks.size() > 1 ? "ranks " : "rank ") + rank_list(ranks) +
                    ": " + sha.substr(0, 12);
        reply["error"] = "the ranks resolved different configs (sha256 of the resolved YAML: " + list +
                         "); every rank must run the same experiment with the same overrides";
        return 2;
    }
    reply["ranks"] = s->ranks;
    g_session = s.release();  // kept until the process exits
    return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

bool active() { return g_session != nullptr; }
int rank() { return g_session ? g_session->rank : 0; }
int world_size() { return g_session ? g_session->world_size : 1; }
int local_rank() { return g_session ? g_session->local_rank : 0; }
double timeout_seconds() { return g_session ? static_cast<double>(g_session->timeout.count()) / 1000.0 : 0.0; }

json describe() {
    if (!g_session) return {{"world_size", 1}};
    const Session& s = *g_session;
    return {{"launcher", s.launcher},
            {"world_size", s.world_size},
            {"store", s.master_addr + ":" + std::to_string(s.master_port)},
            {"store_host", s.agent_store ? "launcher" : "rank 0"},
            {"timeout_s", timeout_seconds()},
            {"ranks", s.ranks}};
}

void report_fatal(const std::string& message) {
    if (!g_session) return;
    try {
        g_session->store->set("fatal/" + std::to_string(g_session->rank), bytes(message));
    } catch (const std::exception&) {
        // the store is gone (rank 0 died first): the others learn of it from their own failure
    }
}

namespace {

// What the other ranks reported before they stopped ("rank 1 failed: ..."); empty when none did. A
// rank reports before it exits, which is what breaks the collective here, so a short wait suffices.
std::string fatal_reports(const Session& s) {
    std::string out;
    for (int attempt = 0; attempt < 5 && out.empty(); ++attempt) {
        if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(200));
        for (int r = 0; r < s.world_size; ++r) {
            if (r == s.rank) continue;
            const std::string key = "fatal/" + std::to_string(r);
            try {
                if (!s.store->check({key})) continue;
                out += (out.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " failed: " + text(s.store->get(key));
            } catch (const std::exception&) {
                return out;  // the store itself is gone: rank 0 died
            }
        }
    }
    return out;
}

}  // namespace

std::string reported_failures() { return g_session ? fatal_reports(*g_session) : std::string(); }

struct Group::Impl {
    c10::intrusive_ptr<c10d::Backend> backend;
    c10::Device device{c10::kCPU};
    int rank = 0, world = 1;

    // Runs a collective; a failure names this rank, the operation, how long it waited and why.
    void run(const std::string& what, const std::function<void()>& collective) const {
        const auto start = Clock::now();
        try {
            collective();
        } catch (const std::exception& e) {
            const double waited = std::chrono::duration<double>(Clock::now() - start).count();
            const std::string prefix = "rank " + std::to_string(rank) + " of " + std::to_string(world) + ": " + what +
                                       " failed after " + seconds(waited) + ": ";
            if (const std::string reported = reported_failures(); !reported.empty())
                throw std::runtime_error(prefix + reported + " [" + reason(e) + "]");
            throw std::runtime_error(prefix + reason(e) + " (another rank died, or did not take part within " +
                                     "distributed.timeout_s = " + seconds(timeout_seconds()) + ")");
        }
    }
};

Group::Group() : impl_(std::make_shared<Impl>()) {}

Group Group::create(const c10::Device& device) {
    Group g;
    if (!g_session) return g;
    Session& s = *g_session;
    g.impl_->rank = s.rank;
    g.impl_->world = s.world_size;
    g.impl_->device = device;
    auto store = c10::make_intrusive<c10d::PrefixStore>("pg/" + std::to_string(s.groups++), s.store);
    g.impl_->run(device.is_cuda() ? "creating the NCCL process group" : "creating the Gloo process group", [&] {
        g.impl_->backend = device.is_cuda() ? make_nccl_backend(store, s.rank, s.world_size, s.timeout,
                                                                device.has_index() ? device.index() : s.local_rank)
                                            : make_gloo_backend(store, s.rank, s.world_size, s.timeout);
    });
    g.barrier("the first barrier of the process group");
    return g;
}

int Group::rank() const { return impl_->rank; }
int Group::world_size() const { return impl_->world; }
c10d::Backend* Group::backend() const { return impl_->backend.get(); }
std::string Group::backend_name() const { return impl_->backend ? impl_->backend->getBackendName() : "none"; }

void Group::sum(std::vector<double>& values, const std::string& what) const {
    if (!impl_->backend) return;
    impl_->run(what, [&] {
        at::Tensor t = at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(impl_->device);
        std::vector<at::Tensor> tensors{t};
        impl_->backend->allreduce(tensors)->wait();
        at::Tensor host = t.to(at::kCPU);  // on CUDA this also waits for the reduction itself
        const double* p = host.data_ptr<double>();
        for (size_t i = 0; i < values.size(); ++i) values[i] = p[i];
    });
}

void Group::barrier(const std::string& what) const {
    std::vector<double> one{1.0};
    sum(one, what);
}

bool Group::any(bool flag, const std::string& what) const {
    std::vector<double> v{flag ? 1.0 : 0.0};
    sum(v, what);
    return v[0] > 0;
}

std::vector<std::string> Group::gather(const std::string& value, const std::string& what) const {
    if (!impl_->backend) return {value};
    return store_gather(*g_session, value, what);
}

}  // namespace l3lab::dist

// The executable's rendezvous requests (runner/dist/launch.cpp): {"op": "init", ...} joins the launch,
// {"op": "allgather", "value": text} returns {"values": [every rank's text]}. Replies one JSON object;
// errors as {"error": text} with exit code 2 (config) or 1.
extern "C" int l3lab_torch_distributed(const char* request_json, void (*emit)(const char*, void*), void* context) {
    json reply = json::object();
    int code = 0;
    try {
        const json request = json::parse(request_json);
        const std::string op = request.at("op");
        if (op == "init") {
            code = l3lab::dist::init(request, reply);
        } else if (op == "allgather") {
            if (!l3lab::dist::g_session) throw std::runtime_error("allgather before init");
            reply["values"] = l3lab::dist::store_gather(*l3lab::dist::g_session, request.at("value"), "agreeing on the launch");
        } else {
            throw std::runtime_error("unknown request '" + op + "'");
        }
    } catch (const std::exception& e) {
        reply = {{"error", l3lab::dist::reason(e)}};
        code = 1;
    }
    emit(reply.dump().c_str(), context);
    return code;
}
