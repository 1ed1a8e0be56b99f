#include "runner/metrics/tensorboard.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <boost/crc.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "runner/metrics/columns.h"
#include "runner/metrics/tensorboard.pb-c.h"

namespace fs = std::filesystem;

namespace l3lab::metrics {

namespace {

using Clock = std::chrono::steady_clock;

// CRC-32C (Castagnoli): polynomial 0x1EDC6F41, reflected, initial and final XOR 0xFFFFFFFF.
using Crc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

std::string errno_text() { return std::strerror(errno); }

void put_le(std::string& out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
void append_record(std::string& out, const std::string& data) {
    std::string length;
    put_le(length, data.size(), 8);
    out += length;
    put_le(out, masked_crc32c(length.data(), length.size()), 4);
    out += data;
    put_le(out, masked_crc32c(data.data(), data.size()), 4);
}

// One Event, built on the stack with protobuf-c's generated structs and serialized by its packer.
class EventBuilder {
public:
    EventBuilder(int64_t step, double wall_time) {
        event_.step = step;
        event_.wall_time = wall_time;
    }
    void file_version(const char* version) {
        event_.what_case = L3LAB__TB__EVENT__WHAT_FILE_VERSION;
        event_.file_version = const_cast<char*>(version);
    }
    void scalar(const std::string& tag, double value) {
        Item& item = next(tag);
        item.value.value_case = L3LAB__TB__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        item.value.simple_value = static_cast<float>(value);
    }
    // A text of the TensorBoard text plugin: a scalar DT_STRING tensor (shown as Markdown).
    void text(const std::string& tag, const std::string& text) {
        Item& item = next(tag);
        item.text = text;
        item.plugin.plugin_name = const_cast<char*>("text");
        item.metadata.plugin_data = &item.plugin;
        item.metadata.data_class = L3LAB__TB__DATA_CLASS__DATA_CLASS_TENSOR;
        item.value.metadata = &item.metadata;
        item.string.len = item.text.size();
        item.string.data = reinterpret_cast<uint8_t*>(item.text.data());
        item.tensor.dtype = L3LAB__TB__DATA_TYPE__DT_STRING;
        item.tensor.tensor_shape = &item.shape;  // no dimensions: a scalar
        item.tensor.n_string_val = 1;
        item.tensor.string_val = &item.string;
        item.value.value_case = L3LAB__TB__SUMMARY__VALUE__VALUE_TENSOR;
        item.value.tensor = &item.tensor;
    }
    std::string serialize() {
        if (!items_.empty()) {
            pointers_.clear();
            for (auto& item : items_) pointers_.push_back(&item->value);
            summary_.n_value = pointers_.size();
            summary_.value = pointers_.data();
            event_.what_case = L3LAB__TB__EVENT__WHAT_SUMMARY;
            event_.summary = &summary_;
        }
        std::string out(l3lab__tb__event__get_packed_size(&event_), '\0');
        l3lab__tb__event__pack(&event_, reinterpret_cast<uint8_t*>(out.data()));
        return out;
    }

private:
    struct Item {
        std::string tag, text;
        L3lab__Tb__Summary__Value value = L3LAB__TB__SUMMARY__VALUE__INIT;
        L3lab__Tb__SummaryMetadata metadata = L3LAB__TB__SUMMARY_METADATA__INIT;
        L3lab__Tb__SummaryMetadata__PluginData plugin = L3LAB__TB__SUMMARY_METADATA__PLUGIN_DATA__INIT;
        L3lab__Tb__TensorProto tensor = L3LAB__TB__TENSOR_PROTO__INIT;
        L3lab__Tb__TensorShapeProto shape = L3LAB__TB__TENSOR_SHAPE_PROTO__INIT;
        ProtobufCBinaryData string{0, nullptr};
    };
    Item& next(const std::string& tag) {
        items_.push_back(std::make_unique<Item>());  // stable addresses: the structs point at each other
        Item& item = *items_.back();
        item.tag = tag;
        item.value.tag = item.tag.data();
        return item;
    }
    L3lab__Tb__Event event_ = L3LAB__TB__EVENT__INIT;
    L3lab__Tb__Summary summary_ = L3LAB__TB__SUMMARY__INIT;
    std::vector<std::unique_ptr<Item>> items_;
    std::vector<L3lab__Tb__Summary__Value*> pointers_;
};

std::string code_block(const std::string& text) {
    // Markdown: indented by four spaces, so YAML and JSON keep their layout in TensorBoard's text tab.
    std::string out = "    ";
    for (char c : text) {
        out.push_back(c);
        if (c == '\n') out += "    ";
    }
    return out;
}

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
    char buf[256] = {0};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
    std::string h = buf;
    for (char& c : h)
        if (c == '/' || c == ' ') c = '_';
    return h.empty() ? "localhost" : h;
}

bool is_event_file(const fs::path& p) { return p.filename().string().find("tfevents") != std::string::npos; }

void write_all(int fd, const std::string& data, const fs::path& path) {
    size_t done = 0;
    while (done < data.size()) {
        const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw std::runtime_error(path.string() + ": write failed: " + errno_text());
        done += static_cast<size_t>(n);
    }
}

}  // namespace

uint32_t masked_crc32c(const void* data, size_t size) {
    Crc32c crc;
    crc.process_bytes(data, size);
    const uint32_t c = crc.checksum();
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::vector<std::pair<std::string, double>> train_scalars(const TrainRecord& record) {
    std::vector<std::pair<std::string, double>> out;
    for (const detail::TrainColumn& c : detail::kTrainColumns) {
        if (std::string(c.name) == "step") continue;
        std::visit([&](auto member) { out.emplace_back("train/" + std::string(c.name), static_cast<double>(record.*member)); },
                   c.member);
    }
    return out;
}

struct TensorBoardWriter::Impl {
    fs::path dir, path;
    int fd = -1;
    std::string pending;  // serialized records not yet written
    Clock::time_point last_flush = Clock::now();

    void add(EventBuilder& event) { append_record(pending, event.serialize()); }

    void train(const TrainRecord& r, double wall_time) {
        EventBuilder e(r.step, wall_time);
        for (const auto& [tag, value] : train_scalars(r)) e.scalar(tag, value);
        add(e);
    }
    void val(const ValRecord& r, double wall_time) {
        EventBuilder e(r.step, wall_time);
        e.scalar("val/bpb", r.bpb);
        if (r.loss) e.scalar("val/loss", *r.loss);
        add(e);
    }
    void core(const CoreRecord& r, double wall_time) {
        EventBuilder e(r.step, wall_time);
        e.scalar("core/metric", r.core_metric);
        for (const CoreTaskRecord& t : r.tasks) {
            e.scalar("core/" + t.task + "/centered", t.centered);
            e.scalar("core/" + t.task + "/accuracy", t.accuracy);
        }
        add(e);
    }
    void sample(const Sample& s, double wall_time) {
        // The text begins with the prompt: shown in bold, then what the model wrote.
        const bool prefixed = s.text.compare(0, s.prompt.size(), s.prompt) == 0;
        EventBuilder e(s.step, wall_time);
        e.text("samples", "**" + s.prompt + "**" + (prefixed ? s.text.substr(s.prompt.size()) : " " + s.text));
        add(e);
    }
    void flush() {
        last_flush = Clock::now();
        if (pending.empty()) return;
        write_all(fd, pending, path);
        pending.clear();
    }
};

TensorBoardWriter::TensorBoardWriter(const fs::path& dir, const Attributes& attributes, const std::vector<TimedRecord>& kept)
    : impl_(std::make_unique<Impl>()) {
    Impl& m = *impl_;
    m.dir = dir;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw std::runtime_error(dir.string() + ": cannot create the TensorBoard directory: " + ec.message());
    std::vector<fs::path> older;
    for (const auto& entry : fs::directory_iterator(dir, ec))
        if (is_event_file(entry.path())) older.push_back(entry.path());

    // Nanoseconds in the name: a resumed run's file sorts after the one it replaces.
    const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
    const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch).count() % 1'000'000'000;
    m.path = dir / fmt::format("events.out.tfevents.{:010d}.{:09d}.{}.{}.l3lab", seconds, nanos, host_name(), ::getpid());
    m.fd = ::open(m.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (m.fd < 0) throw std::runtime_error(m.path.string() + ": cannot create: " + errno_text());

    const double start = kept.empty() || kept.front().wall_time <= 0 ? now_seconds() : kept.front().wall_time;
    EventBuilder version(0, start);
    version.file_version("brain.Event:2");
    m.add(version);
    EventBuilder texts(0, start);
    texts.text("config", code_block(attributes.config_yaml));
    texts.text("provenance", code_block(attributes.provenance_json));
    const auto provenance = nlohmann::json::parse(attributes.provenance_json, nullptr, /*allow_exceptions=*/false);
    if (provenance.is_object() && provenance.contains("l3_allocation") && provenance["l3_allocation"].is_string())
        texts.text("l3_allocation", provenance["l3_allocation"].get<std::string>());
    m.add(texts);
    for (const TimedRecord& r : kept) {
        const double t = r.wall_time > 0 ? r.wall_time : start;
        switch (r.kind) {
            case TimedRecord::Kind::Train: m.train(r.train, t); break;
            case TimedRecord::Kind::Val: m.val(r.val, t); break;
            case TimedRecord::Kind::Sample: m.sample(r.sample, t); break;
            case TimedRecord::Kind::Core: m.core(r.core, t); break;
        }
    }
    m.flush();
    if (::fsync(m.fd) != 0) throw std::runtime_error(m.path.string() + ": fsync failed: " + errno_text());
    for (const auto& p : older) fs::remove(p, ec);  // the new file holds every step they held that counts
}

TensorBoardWriter::~TensorBoardWriter() {
    try {
        impl_->flush();
    } catch (...) {
    }
    if (impl_->fd >= 0) ::close(impl_->fd);
}

void TensorBoardWriter::train(const TrainRecord& record, double wall_time) { impl_->train(record, wall_time); }
void TensorBoardWriter::val(const ValRecord& record, double wall_time) { impl_->val(record, wall_time); }
void TensorBoardWriter::sample(const Sample& sample, double wall_time) { impl_->sample(sample, wall_time); }
void TensorBoardWriter::core(const CoreRecord& record, double wall_time) { impl_->core(record, wall_time); }
void TensorBoardWriter::flush() { impl_->flush(); }
void TensorBoardWriter::flush_every(std::chrono::milliseconds interval) {
    if (Clock::now() - impl_->last_flush >= interval) impl_->flush();
}
const fs::path& TensorBoardWriter::path() const { return impl_->path; }

}  // namespace l3lab::metrics
