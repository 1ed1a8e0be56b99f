// Reads every text of the given parquet files the way `l3lab data tokenize` does (DocumentReader over
// Arrow's C++ Parquet reader, UTF-8 checked, a std::string per document) and prints one JSON line:
// {"documents": N, "bytes": B, "seconds": S}. tools/bench/bench_tokenizer.py times it against pyarrow's
// to-Python path on the same files.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "runner/data/corpus.h"

int main(int argc, char** argv) {
    std::vector<std::string> inputs(argv + 1, argv + argc);
    if (inputs.empty()) {
        std::fprintf(stderr, "usage: bench_parquet FILE.parquet|DIR...\n");
        return 2;
    }
    const auto start = std::chrono::steady_clock::now();
    l3lab::data::DocumentReader reader(l3lab::data::expand_inputs(inputs));
    l3lab::data::Document doc;
    int64_t documents = 0;
    while (reader.next(doc)) ++documents;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("{\"documents\": %lld, \"bytes\": %lld, \"seconds\": %.6f}\n", static_cast<long long>(documents),
                static_cast<long long>(reader.bytes_read()), seconds);
    return 0;
}
