#include "runner/metrics/h5view.h"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "runner/metrics/columns.h"
#include "runner/metrics/table.h"

namespace l3lab::metrics::detail {

namespace {

namespace fs = std::filesystem;

constexpr int kFormatVersion = 1;
// Rows per chunk: 8 KiB of float64 per train column; val and samples come far less often.
constexpr hsize_t kTrainChunk = 1024, kValChunk = 256, kSampleChunk = 64, kCoreChunk = 64;

// HDF5 prints its error stack to stderr unless told not to; the stack goes into our MetricsError
// instead. The setting is per thread in a thread-safe build, so every entry point calls this.
void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

herr_t collect_error(unsigned, const H5E_error2_t* e, void* out) {
    if (e->desc && *e->desc) static_cast<std::vector<std::string>*>(out)->push_back(e->desc);
    return 0;
}

// "outermost problem (innermost cause)", e.g. "unable to open file (file is already open for write)".
std::string hdf5_error() {
    std::vector<std::string> messages;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &messages);
    H5Eclear2(H5E_DEFAULT);
    if (messages.empty()) return "HDF5 error";
    return messages.size() == 1 ? messages.front() : messages.front() + " (" + messages.back() + ")";
}

template <typename T>
T check(T result, const fs::path& path, const std::string& what) {
    if (result < 0) throw MetricsError(path, what + ": " + hdf5_error());
    return result;
}

// An HDF5 identifier and the function that closes it.
class Id {
public:
    Id() = default;
    Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
    ~Id() { reset(); }
    Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
    Id& operator=(Id&& o) noexcept {
        if (this != &o) {
            reset();
            id_ = std::exchange(o.id_, H5I_INVALID_HID);
            close_ = o.close_;
        }
        return *this;
    }
    hid_t get() const { return id_; }
    herr_t reset() {
        herr_t rc = id_ >= 0 ? close_(std::exchange(id_, H5I_INVALID_HID)) : 0;
        return rc;
    }

private:
    hid_t id_ = H5I_INVALID_HID;
    herr_t (*close_)(hid_t) = nullptr;
};

Id utf8_string_type() {
    Id type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type.get(), H5T_VARIABLE);
    H5Tset_cset(type.get(), H5T_CSET_UTF8);
    return type;
}

Id create_group(hid_t parent, const char* name, const fs::path& path) {
    // Tracked creation order lets readers list the columns in file order rather than by name.
    Id gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    return Id(check(H5Gcreate2(parent, name, H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), path,
                    std::string("cannot create group /") + name),
              H5Gclose);
}

Id create_column(hid_t group, const char* name, hid_t type, hsize_t chunk, const fs::path& path) {
    hsize_t dims = 0, max_dims = H5S_UNLIMITED;
    Id space(H5Screate_simple(1, &dims, &max_dims), H5Sclose);
    Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_chunk(dcpl.get(), 1, &chunk);
    return Id(check(H5Dcreate2(group, name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), path,
                    std::string("cannot create column ") + name),
              H5Dclose);
}

void write_string_attribute(hid_t object, const char* name, const std::string& value, hid_t string_type,
                            const fs::path& path) {
    Id space(H5Screate(H5S_SCALAR), H5Sclose);
    Id attr(check(H5Acreate2(object, name, string_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), path,
                  std::string("cannot create attribute ") + name),
            H5Aclose);
    const char* p = value.c_str();
    check(H5Awrite(attr.get(), string_type, &p), path, std::string("cannot write attribute ") + name);
}

// Grows a column from `rows` to `rows + n` and writes the new rows.
void append_rows(hid_t dataset, hid_t memory_type, hsize_t rows, hsize_t n, const void* data, const fs::path& path,
                 const char* column) {
    if (n == 0) return;
    const hsize_t new_rows = rows + n;
    auto fail = std::string("cannot append to column ") + column;
    check(H5Dset_extent(dataset, &new_rows), path, fail);
    Id file_space(check(H5Dget_space(dataset), path, fail), H5Sclose);
    check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &rows, nullptr, &n, nullptr), path, fail);
    Id memory_space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    check(H5Dwrite(dataset, memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, data), path, fail);
}

// ---- reading ----

Id open_column(hid_t file, const std::string& name, const fs::path& path) {
    return Id(check(H5Dopen2(file, name.c_str(), H5P_DEFAULT), path, "cannot open " + name), H5Dclose);
}

hsize_t rows_of(hid_t dataset, const fs::path& path) {
    Id space(check(H5Dget_space(dataset), path, "cannot read a column's size"), H5Sclose);
    hsize_t rows = 0;
    check(H5Sget_simple_extent_dims(space.get(), &rows, nullptr), path, "cannot read a column's size");
    return rows;
}

// The first n rows (a live writer may have extended some columns further than others).
void read_rows(hid_t dataset, hid_t memory_type, hsize_t n, void* out, const fs::path& path) {
    if (n == 0) return;
    Id file_space(check(H5Dget_space(dataset), path, "cannot read a column"), H5Sclose);
    const hsize_t start = 0;
    check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &n, nullptr), path,
          "cannot read a column");
    Id memory_space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    check(H5Dread(dataset, memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, out), path,
          "cannot read a column");
}

std::vector<std::string> read_strings(hid_t dataset, hid_t string_type, hsize_t n, const fs::path& path) {
    std::vector<char*> raw(n, nullptr);
    read_rows(dataset, string_type, n, raw.data(), path);
    std::vector<std::string> out;
    out.reserve(n);
    for (char* s : raw) {
        out.emplace_back(s ? s : "");
        H5free_memory(s);
    }
    return out;
}

std::string read_string_attribute(hid_t object, const char* name, hid_t string_type, const fs::path& path) {
    if (H5Aexists(object, name) <= 0) return "";
    Id attr(check(H5Aopen(object, name, H5P_DEFAULT), path, std::string("cannot open attribute ") + name), H5Aclose);
    char* raw = nullptr;
    check(H5Aread(attr.get(), string_type, &raw), path, std::string("cannot read attribute ") + name);
    std::string value = raw ? raw : "";
    H5free_memory(raw);
    return value;
}

}  // namespace

struct H5View::Handles {
    Id file;  // declared first: closed last
    Id string_type = utf8_string_type();
    Id train_group, val_group, samples_group;
    std::vector<Id> train;  // in kTrainColumns order
    Id val_step, val_bpb, val_loss;
    Id sample_step, sample_prompt, sample_text;
    Id core_group, core_tasks_group;
    Id core_step, core_metric, task_step, task_name, task_accuracy, task_centered;
    hsize_t train_rows = 0, val_rows = 0, sample_rows = 0, core_rows = 0, task_rows = 0;
};

H5View::H5View(const fs::path& path) : path_(path), h_(std::make_unique<Handles>()) {}

H5View::~H5View() {
    if (h_) {
        silence_hdf5();
        h_.reset();
    }
}

std::unique_ptr<H5View> H5View::create(const fs::path& path, const MetricsLog& log) {
    silence_hdf5();
    std::unique_ptr<H5View> view(new H5View(path));
    Handles& h = *view->h_;
    const hid_t str = h.string_type.get();

    Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST), path,
          "cannot ask for the latest format");
    h.file =
        Id(check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), path, "cannot create"), H5Fclose);
    const hid_t file = h.file.get();

    write_string_attribute(file, "config_yaml", log.attributes.config_yaml, str, path);
    write_string_attribute(file, "provenance_json", log.attributes.provenance_json, str, path);
    {
        Id space(H5Screate(H5S_SCALAR), H5Sclose);
        Id attr(check(H5Acreate2(file, "l3lab_metrics_version", H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                      path, "cannot create attribute l3lab_metrics_version"),
                H5Aclose);
        check(H5Awrite(attr.get(), H5T_NATIVE_INT, &kFormatVersion), path, "cannot write l3lab_metrics_version");
    }

    h.train_group = create_group(file, "train", path);
    for (const TrainColumn& c : kTrainColumns) {
        const hid_t type = std::holds_alternative<int64_t TrainRecord::*>(c.member) ? H5T_STD_I64LE : H5T_IEEE_F64LE;
        h.train.push_back(create_column(h.train_group.get(), c.name, type, kTrainChunk, path));
    }
    h.val_group = create_group(file, "val", path);
    h.val_step = create_column(h.val_group.get(), "step", H5T_STD_I64LE, kValChunk, path);
    h.val_bpb = create_column(h.val_group.get(), "bpb", H5T_IEEE_F64LE, kValChunk, path);
    h.val_loss = create_column(h.val_group.get(), "loss", H5T_IEEE_F64LE, kValChunk, path);
    h.samples_group = create_group(file, "samples", path);
    h.sample_step = create_column(h.samples_group.get(), "step", H5T_STD_I64LE, kSampleChunk, path);
    h.sample_prompt = create_column(h.samples_group.get(), "prompt", str, kSampleChunk, path);
    h.sample_text = create_column(h.samples_group.get(), "text", str, kSampleChunk, path);

    h.core_group = create_group(file, "core", path);
    h.core_step = create_column(h.core_group.get(), "step", H5T_STD_I64LE, kCoreChunk, path);
    h.core_metric = create_column(h.core_group.get(), "core_metric", H5T_IEEE_F64LE, kCoreChunk, path);
    h.core_tasks_group = create_group(h.core_group.get(), "tasks", path);
    h.task_step = create_column(h.core_tasks_group.get(), "step", H5T_STD_I64LE, kCoreChunk, path);
    h.task_name = create_column(h.core_tasks_group.get(), "task", str, kCoreChunk, path);
    h.task_accuracy = create_column(h.core_tasks_group.get(), "accuracy", H5T_IEEE_F64LE, kCoreChunk, path);
    h.task_centered = create_column(h.core_tasks_group.get(), "centered", H5T_IEEE_F64LE, kCoreChunk, path);

    view->append(log.train, log.val, log.samples, log.core);
    return view;
}

void H5View::start_swmr_write() {
    silence_hdf5();
    check(H5Fstart_swmr_write(h_->file.get()), path_, "cannot start SWMR writing");
}

void H5View::append(std::span<const TrainRecord> train, std::span<const ValRecord> val,
                    std::span<const Sample> samples, std::span<const CoreRecord> core) {
    silence_hdf5();
    Handles& h = *h_;
    if (!train.empty()) {
        std::vector<int64_t> ints(train.size());
        std::vector<double> doubles(train.size());
        for (size_t c = 0; c < std::size(kTrainColumns); ++c) {
            const TrainColumn& column = kTrainColumns[c];
            const void* data;
            hid_t type;
            if (auto* m = std::get_if<int64_t TrainRecord::*>(&column.member)) {
                for (size_t i = 0; i < train.size(); ++i) ints[i] = train[i].*(*m);
                data = ints.data(), type = H5T_NATIVE_INT64;
            } else {
                auto member = std::get<double TrainRecord::*>(column.member);
                for (size_t i = 0; i < train.size(); ++i) doubles[i] = train[i].*member;
                data = doubles.data(), type = H5T_NATIVE_DOUBLE;
            }
            append_rows(h.train[c].get(), type, h.train_rows, train.size(), data, path_, column.name);
        }
        h.train_rows += train.size();
    }
    if (!val.empty()) {
        std::vector<int64_t> steps;
        std::vector<double> bpb, loss;
        for (const ValRecord& v : val) {
            steps.push_back(v.step);
            bpb.push_back(v.bpb);
            loss.push_back(v.loss.value_or(kNaN));
        }
        append_rows(h.val_step.get(), H5T_NATIVE_INT64, h.val_rows, val.size(), steps.data(), path_, "val/step");
        append_rows(h.val_bpb.get(), H5T_NATIVE_DOUBLE, h.val_rows, val.size(), bpb.data(), path_, "val/bpb");
        append_rows(h.val_loss.get(), H5T_NATIVE_DOUBLE, h.val_rows, val.size(), loss.data(), path_, "val/loss");
        h.val_rows += val.size();
    }
    if (!samples.empty()) {
        std::vector<int64_t> steps;
        std::vector<const char*> prompts, texts;
        for (const Sample& s : samples) {
            steps.push_back(s.step);
            prompts.push_back(s.prompt.c_str());
            texts.push_back(s.text.c_str());
        }
        const hid_t str = h.string_type.get();
        const size_t n = samples.size();
        append_rows(h.sample_step.get(), H5T_NATIVE_INT64, h.sample_rows, n, steps.data(), path_, "samples/step");
        append_rows(h.sample_prompt.get(), str, h.sample_rows, n, prompts.data(), path_, "samples/prompt");
        append_rows(h.sample_text.get(), str, h.sample_rows, n, texts.data(), path_, "samples/text");
        h.sample_rows += n;
    }
    if (!core.empty()) {
        std::vector<int64_t> steps, task_steps;
        std::vector<double> metric, accuracy, centered;
        std::vector<const char*> names;
        for (const CoreRecord& c : core) {
            steps.push_back(c.step);
            metric.push_back(c.core_metric);
            for (const CoreTaskRecord& t : c.tasks) {
                task_steps.push_back(c.step);
                names.push_back(t.task.c_str());
                accuracy.push_back(t.accuracy);
                centered.push_back(t.centered);
            }
        }
        append_rows(h.core_step.get(), H5T_NATIVE_INT64, h.core_rows, core.size(), steps.data(), path_, "core/step");
        append_rows(h.core_metric.get(), H5T_NATIVE_DOUBLE, h.core_rows, core.size(), metric.data(), path_,
                    "core/core_metric");
        h.core_rows += core.size();
        const size_t n = task_steps.size();
        append_rows(h.task_step.get(), H5T_NATIVE_INT64, h.task_rows, n, task_steps.data(), path_, "core/tasks/step");
        append_rows(h.task_name.get(), h.string_type.get(), h.task_rows, n, names.data(), path_, "core/tasks/task");
        append_rows(h.task_accuracy.get(), H5T_NATIVE_DOUBLE, h.task_rows, n, accuracy.data(), path_,
                    "core/tasks/accuracy");
        append_rows(h.task_centered.get(), H5T_NATIVE_DOUBLE, h.task_rows, n, centered.data(), path_,
                    "core/tasks/centered");
        h.task_rows += n;
    }
    check(H5Fflush(h.file.get(), H5F_SCOPE_LOCAL), path_, "cannot flush");
}

void H5View::close() {
    if (!h_) return;
    silence_hdf5();
    Id file = std::move(h_->file);
    h_.reset();  // every dataset, group and type first
    if (file.reset() < 0) throw MetricsError(path_, "cannot close: " + hdf5_error());
}

}  // namespace l3lab::metrics::detail

namespace l3lab::metrics {

MetricsLog read_view(const std::filesystem::path& path) {
    using namespace detail;
    silence_hdf5();
    // SWMR read access opens a file that a live or killed writer still marks as open for writing.
    Id file(check(H5Fopen(path.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT), path, "cannot open"),
            H5Fclose);
    Id str = utf8_string_type();
    MetricsLog log;
    log.attributes.config_yaml = read_string_attribute(file.get(), "config_yaml", str.get(), path);
    log.attributes.provenance_json = read_string_attribute(file.get(), "provenance_json", str.get(), path);

    // The columns of a group and the rows that all of them hold.
    auto open_all = [&](const std::string& group, const std::vector<const char*>& names, hsize_t& rows) {
        std::vector<Id> columns;
        rows = ~hsize_t{0};
        for (const char* name : names) {
            columns.push_back(open_column(file.get(), group + "/" + name, path));
            rows = std::min(rows, rows_of(columns.back().get(), path));
        }
        return columns;
    };

    hsize_t n = 0;
    {
        std::vector<const char*> names;
        for (const TrainColumn& c : kTrainColumns) names.push_back(c.name);
        auto columns = open_all("train", names, n);
        log.train.resize(n);
        std::vector<int64_t> ints(n);
        std::vector<double> doubles(n);
        for (size_t c = 0; c < std::size(kTrainColumns); ++c) {
            if (auto* m = std::get_if<int64_t TrainRecord::*>(&kTrainColumns[c].member)) {
                read_rows(columns[c].get(), H5T_NATIVE_INT64, n, ints.data(), path);
                for (hsize_t i = 0; i < n; ++i) log.train[i].*(*m) = ints[i];
            } else {
                auto member = std::get<double TrainRecord::*>(kTrainColumns[c].member);
                read_rows(columns[c].get(), H5T_NATIVE_DOUBLE, n, doubles.data(), path);
                for (hsize_t i = 0; i < n; ++i) log.train[i].*member = doubles[i];
            }
        }
    }
    {
        auto columns = open_all("val", {"step", "bpb", "loss"}, n);
        std::vector<int64_t> steps(n);
        std::vector<double> bpb(n), loss(n);
        read_rows(columns[0].get(), H5T_NATIVE_INT64, n, steps.data(), path);
        read_rows(columns[1].get(), H5T_NATIVE_DOUBLE, n, bpb.data(), path);
        read_rows(columns[2].get(), H5T_NATIVE_DOUBLE, n, loss.data(), path);
        for (hsize_t i = 0; i < n; ++i)
            log.val.push_back({steps[i], bpb[i], std::isnan(loss[i]) ? std::nullopt : std::optional(loss[i])});
    }
    {
        auto columns = open_all("samples", {"step", "prompt", "text"}, n);
        std::vector<int64_t> steps(n);
        read_rows(columns[0].get(), H5T_NATIVE_INT64, n, steps.data(), path);
        auto prompts = read_strings(columns[1].get(), str.get(), n, path);
        auto texts = read_strings(columns[2].get(), str.get(), n, path);
        for (hsize_t i = 0; i < n; ++i) log.samples.push_back({steps[i], std::move(prompts[i]), std::move(texts[i])});
    }
    if (H5Lexists(file.get(), "core", H5P_DEFAULT) > 0) {  // views written before CORE have no /core
        auto columns = open_all("core", {"step", "core_metric"}, n);
        std::vector<int64_t> steps(n);
        std::vector<double> metric(n);
        read_rows(columns[0].get(), H5T_NATIVE_INT64, n, steps.data(), path);
        read_rows(columns[1].get(), H5T_NATIVE_DOUBLE, n, metric.data(), path);
        for (hsize_t i = 0; i < n; ++i) log.core.push_back({steps[i], metric[i], {}});
        auto tasks = open_all("core/tasks", {"step", "task", "accuracy", "centered"}, n);
        std::vector<int64_t> task_steps(n);
        std::vector<double> accuracy(n), centered(n);
        read_rows(tasks[0].get(), H5T_NATIVE_INT64, n, task_steps.data(), path);
        auto names = read_strings(tasks[1].get(), str.get(), n, path);
        read_rows(tasks[2].get(), H5T_NATIVE_DOUBLE, n, accuracy.data(), path);
        read_rows(tasks[3].get(), H5T_NATIVE_DOUBLE, n, centered.data(), path);
        // A task row belongs to the evaluation of its step (a live writer may have written an evaluation's
        // row but not yet all its task rows, or the reverse: rows without their evaluation are dropped).
        size_t e = 0;
        for (hsize_t i = 0; i < n; ++i) {
            while (e < log.core.size() && log.core[e].step < task_steps[i]) ++e;
            if (e == log.core.size()) break;
            if (log.core[e].step == task_steps[i])
                log.core[e].tasks.push_back({std::move(names[i]), accuracy[i], centered[i]});
        }
    }
    return log;
}

}  // namespace l3lab::metrics

// ---- tables (runner/metrics/table.h) ----

namespace l3lab::metrics {

void write_table(const std::filesystem::path& path, const std::string& group_name,
                 const std::vector<TableColumn>& columns,
                 const std::vector<std::pair<std::string, std::string>>& attributes) {
    using namespace detail;
    silence_hdf5();
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
        Id file(check(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), tmp, "cannot create the file"),
                H5Fclose);
        Id group = create_group(file.get(), group_name.c_str(), tmp);
        Id str = utf8_string_type();
        for (const auto& [name, value] : attributes)
            write_string_attribute(group.get(), name.c_str(), value, str.get(), tmp);
        for (const auto& column : columns) {
            hid_t file_type = H5T_IEEE_F64LE, memory_type = H5T_NATIVE_DOUBLE;
            const void* data = nullptr;
            std::vector<const char*> pointers;
            hsize_t rows = 0;
            if (auto* d = std::get_if<std::vector<double>>(&column.values)) {
                rows = d->size();
                data = d->data();
            } else if (auto* i = std::get_if<std::vector<int64_t>>(&column.values)) {
                rows = i->size();
                data = i->data();
                file_type = H5T_STD_I64LE;
                memory_type = H5T_NATIVE_INT64;
            } else {
                const auto& s = std::get<std::vector<std::string>>(column.values);
                rows = s.size();
                for (const auto& text : s) pointers.push_back(text.c_str());
                data = pointers.data();
                file_type = memory_type = str.get();
            }
            Id space(H5Screate_simple(1, &rows, nullptr), H5Sclose);
            Id dataset(check(H5Dcreate2(group.get(), column.name.c_str(), file_type, space.get(), H5P_DEFAULT,
                                        H5P_DEFAULT, H5P_DEFAULT),
                             tmp, "cannot create column " + column.name),
                       H5Dclose);
            if (rows > 0)
                check(H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), tmp,
                      "cannot write column " + column.name);
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::filesystem::remove(tmp);
        throw MetricsError(path, "cannot replace the file: " + ec.message());
    }
}

}  // namespace l3lab::metrics
