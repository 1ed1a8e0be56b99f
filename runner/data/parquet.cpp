#include "runner/data/parquet.h"

#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>

#include "runner/data/errors.h"
#include "runner/data/utf8.h"
#include "runner/util/format.h"

namespace l3lab::data {

struct ParquetTextFile::Impl {
    std::string path, column_name;
    std::unique_ptr<parquet::arrow::FileReader> reader;
    int column = -1;
};

namespace {

// Arrow's messages start with a status code ("IOError: ", "Invalid: "); the rest says what happened.
std::string arrow_message(const arrow::Status& s) { return s.message(); }

template <class Array>
void append_texts(const Array& a, const std::string& path, int g, int64_t first_row, std::vector<std::string>& out) {
    for (int64_t i = 0; i < a.length(); ++i) {
        const int64_t row = first_row + i;
        if (a.IsNull(i))
            throw DataError(path, "row group " + std::to_string(g) + ", row " + util::group_digits(row) +
                                      ": the text is null (nanochat's tokenizer would fail on it too)");
        const std::string_view text = a.GetView(i);
        if (size_t bad = first_invalid_utf8(text); bad != std::string_view::npos)
            throw DataError(path, "row group " + std::to_string(g) + ", row " + util::group_digits(row) + ": byte offset " +
                                      util::group_digits(static_cast<int64_t>(bad)) + " of the text: not valid UTF-8");
        out.emplace_back(text);
    }
}

}  // namespace

bool parquet_supported() { return true; }

ParquetTextFile::ParquetTextFile(const std::string& path, const std::string& column) : impl_(std::make_unique<Impl>()) {
    impl_->path = path;
    impl_->column_name = column;
    auto file = arrow::io::ReadableFile::Open(path);
    if (!file.ok()) throw DataError(path, "cannot open the file: " + arrow_message(file.status()));
    auto reader = parquet::arrow::OpenFile(*file, arrow::default_memory_pool());
    if (!reader.ok()) throw DataError(path, "not a parquet file (or a damaged one): " + arrow_message(reader.status()));
    impl_->reader = std::move(*reader);
    std::shared_ptr<arrow::Schema> schema;
    if (auto s = impl_->reader->GetSchema(&schema); !s.ok())
        throw DataError(path, "cannot read the parquet schema: " + arrow_message(s));
    impl_->column = schema->GetFieldIndex(column);
    if (impl_->column < 0) {
        std::string names;
        for (const auto& f : schema->fields()) names += (names.empty() ? "" : ", ") + f->name();
        throw DataError(path, "no column '" + column + "' (the file has: " + (names.empty() ? "no columns" : names) +
                                  "); choose one with --text-column");
    }
    const auto type = schema->field(impl_->column)->type();
    const auto id = type->id() == arrow::Type::DICTIONARY
                        ? std::static_pointer_cast<arrow::DictionaryType>(type)->value_type()->id()
                        : type->id();
    if (id != arrow::Type::STRING && id != arrow::Type::LARGE_STRING && id != arrow::Type::STRING_VIEW)
        throw DataError(path, "column '" + column + "' holds " + type->ToString() + ", not strings");
}

ParquetTextFile::~ParquetTextFile() = default;

int ParquetTextFile::row_groups() const { return impl_->reader->num_row_groups(); }

int64_t ParquetTextFile::rows() const { return impl_->reader->parquet_reader()->metadata()->num_rows(); }

std::vector<std::string> ParquetTextFile::read_row_group(int g) const {
    std::shared_ptr<arrow::ChunkedArray> column;
    arrow::Status s;
    try {
        s = impl_->reader->RowGroup(g)->Column(impl_->column)->Read(&column);
    } catch (const std::exception& e) {  // parquet::ParquetException from deep inside a damaged page
        throw DataError(impl_->path, "row group " + std::to_string(g) + ": cannot read the column '" + impl_->column_name +
                                         "': " + e.what());
    }
    if (!s.ok())
        throw DataError(impl_->path, "row group " + std::to_string(g) + ": cannot read the column '" + impl_->column_name +
                                         "': " + arrow_message(s));
    std::vector<std::string> out;
    out.reserve(static_cast<size_t>(column->length()));
    int64_t row = 0;
    for (const auto& chunk : column->chunks()) {
        std::shared_ptr<arrow::Array> a = chunk;
        if (a->type_id() == arrow::Type::DICTIONARY) {  // dictionary-encoded strings: look each one up
            const auto& d = static_cast<const arrow::DictionaryArray&>(*a);
            if (d.dictionary()->type_id() != arrow::Type::STRING)
                throw DataError(impl_->path, "column '" + impl_->column_name + "' holds " + a->type()->ToString());
            const auto& values = static_cast<const arrow::StringArray&>(*d.dictionary());
            arrow::StringBuilder b;
            for (int64_t i = 0; i < d.length(); ++i) {
                const auto st = d.IsNull(i) ? b.AppendNull() : b.Append(values.GetView(d.GetValueIndex(i)));
                if (!st.ok()) throw DataError(impl_->path, "row group " + std::to_string(g) + ": " + arrow_message(st));
            }
            auto built = b.Finish();
            if (!built.ok()) throw DataError(impl_->path, "row group " + std::to_string(g) + ": " + arrow_message(built.status()));
            a = *built;
        }
        switch (a->type_id()) {
            case arrow::Type::STRING: append_texts(static_cast<const arrow::StringArray&>(*a), impl_->path, g, row, out); break;
            case arrow::Type::LARGE_STRING:
                append_texts(static_cast<const arrow::LargeStringArray&>(*a), impl_->path, g, row, out);
                break;
            case arrow::Type::STRING_VIEW:
                append_texts(static_cast<const arrow::StringViewArray&>(*a), impl_->path, g, row, out);
                break;
            default: throw DataError(impl_->path, "column '" + impl_->column_name + "' holds " + a->type()->ToString());
        }
        row += a->length();
    }
    return out;
}

}  // namespace l3lab::data
