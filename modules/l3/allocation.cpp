#include "modules/l3/allocation.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace l3lab::l3 {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

void validate(const char* algorithm, const std::vector<TokenSequence>& sequences, int64_t vocab_size,
              int64_t n_emb, int64_t k_max) {
    const std::string where = std::string(algorithm) + " allocation: ";
    if (vocab_size < 1) throw std::invalid_argument(where + "vocab_size (" + str(vocab_size) + ") must be >= 1");
    if (vocab_size > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument(where + "vocab_size (" + str(vocab_size) + ") must fit in int32 token ids");
    if (n_emb < vocab_size)
        throw std::invalid_argument(where + "n_emb (" + str(n_emb) + ") must be >= vocab_size (" + str(vocab_size) +
                                    ")");
    if (k_max < 1) throw std::invalid_argument(where + "k_max (" + str(k_max) + ") must be >= 1");
    for (size_t i = 0; i < sequences.size(); ++i) {
        const TokenSequence& seq = sequences[i];
        for (size_t j = 0; j < seq.size(); ++j)
            if (seq[j] < 0 || seq[j] >= vocab_size)
                throw std::invalid_argument(where + "token id " + str(seq[j]) + " at sequence " + str(int64_t(i)) +
                                            ", position " + str(int64_t(j)) + " is outside the vocabulary [0, " +
                                            str(vocab_size) + ")");
    }
}

// Both algorithms stop short, as the reference does, when every token already has k_max rows.
void warn_if_short(const char* algorithm, Allocation& a, int64_t n_emb, int64_t k_max) {
    const int64_t total = a.total();
    if (total < n_emb)
        a.warnings.push_back(std::string(algorithm) + " allocation: n_emb = " + str(n_emb) +
                             " exceeds k_max x vocab_size = " + str(k_max) + " x " + str(int64_t(a.rows.size())) +
                             "; allocated " + str(total) + " rows");
}

// The LZ78 dictionary as a trie: node ids are codeword ids, in first-insertion order (the single tokens
// 0..V-1 first). Edges (node, token) -> child live in one open-addressing table, so extending a match is one
// probe sequence and no codeword is ever materialised as a token vector.
class ChildTable {
public:
    explicit ChildTable(size_t expected_edges) {
        size_t capacity = 1024;
        while (capacity < 2 * expected_edges) capacity *= 2;
        keys_.assign(capacity, kEmpty);
        values_.resize(capacity);
        mask_ = capacity - 1;
    }

    // The child of `node` along `token`, or -1.
    int32_t find(int32_t node, int32_t token) const {
        const uint64_t k = key(node, token);
        for (size_t slot = hash(k) & mask_;; slot = (slot + 1) & mask_) {
            if (keys_[slot] == k) return values_[slot];
            if (keys_[slot] == kEmpty) return -1;
        }
    }

    // Adds an edge known to be absent.
    void insert(int32_t node, int32_t token, int32_t child) {
        if (2 * (size_ + 1) > keys_.size()) grow();
        place(key(node, token), child);
        ++size_;
    }

private:
    static constexpr uint64_t kEmpty = ~uint64_t(0);  // node ids are < 2^31, so no real key has all bits set

    static uint64_t key(int32_t node, int32_t token) { return (uint64_t(uint32_t(node)) << 32) | uint32_t(token); }
    static uint64_t hash(uint64_t k) {  // murmur3's 64-bit finaliser: consecutive keys spread over all slots
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdULL;
        k ^= k >> 33;
        k *= 0xc4ceb9fe1a85ec53ULL;
        k ^= k >> 33;
        return k;
    }

    void place(uint64_t k, int32_t value) {
        size_t slot = hash(k) & mask_;
        while (keys_[slot] != kEmpty) slot = (slot + 1) & mask_;
        keys_[slot] = k;
        values_[slot] = value;
    }

    void grow() {
        std::vector<uint64_t> old_keys(keys_.size() * 2, kEmpty);
        std::vector<int32_t> old_values(values_.size() * 2);
        old_keys.swap(keys_);
        old_values.swap(values_);
        mask_ = keys_.size() - 1;
        for (size_t i = 0; i < old_keys.size(); ++i)
            if (old_keys[i] != kEmpty) place(old_keys[i], old_values[i]);
    }

    std::vector<uint64_t> keys_;
    std::vector<int32_t> values_;
    size_t mask_ = 0, size_ = 0;
};

}  // namespace

int64_t Allocation::total() const { return std::accumulate(rows.begin(), rows.end(), int64_t(0)); }

Allocation lzw_allocation(const std::vector<TokenSequence>& pieces, int64_t vocab_size, int64_t n_emb,
                          int64_t k_max, const AllocationProgress& progress) {
    validate("lzw", pieces, vocab_size, n_emb, k_max);
    const int32_t V = int32_t(vocab_size);

    size_t sample_tokens = 0;
    for (const TokenSequence& piece : pieces) sample_tokens += piece.size();
    // Each parse step consumes at least two tokens and adds at most one codeword.
    ChildTable children(std::min<size_t>(sample_tokens / 2, size_t(1) << 26));
    std::vector<int64_t> count(size_t(V), 0);       // per codeword
    std::vector<int32_t> last_token(count.size());  // per codeword
    std::iota(last_token.begin(), last_token.end(), 0);

    auto add_codeword = [&](int32_t parent, int32_t token) {
        if (count.size() >= size_t(std::numeric_limits<int32_t>::max()))
            throw std::length_error("lzw allocation: more than 2^31 codewords; use a smaller sample");
        const int32_t node = int32_t(count.size());
        children.insert(parent, token, node);
        count.push_back(1);
        last_token.push_back(token);
    };

    // The port's parse, in its own index terms: a phrase starts at `start` with the single token (always a
    // codeword) and grows while the next token extends a codeword; `end` is one past the token that would be
    // added. A phrase therefore needs two tokens, so a piece's last token never starts one.
    int64_t parsed = 0, reported = 0;
    for (const TokenSequence& piece : pieces) {
        if (progress && parsed - reported >= 65536) progress(reported = parsed);
        parsed += int64_t(piece.size());
        const size_t n = piece.size();
        size_t start = 0;
        while (start + 1 < n) {
            int32_t node = piece[start];  // the codeword piece[start, end - 1)
            size_t end = start + 2;
            while (end < n) {
                const int32_t child = children.find(node, piece[end - 1]);
                if (child < 0) break;
                node = child;
                ++end;
            }
            ++count[size_t(node)];
            if (end < n) {
                add_codeword(node, piece[end - 1]);
            } else {
                // At the piece's end the port never checks whether the tail piece[start, n) is already a
                // codeword: it (re)sets its count to 1, keeping its first-insertion position.
                const int32_t tail = children.find(node, piece[n - 1]);
                if (tail >= 0)
                    count[size_t(tail)] = 1;
                else
                    add_codeword(node, piece[n - 1]);
            }
            start = end;
        }
    }

    if (progress) progress(parsed);

    // Codewords by count, descending, ties by first insertion (= node id): one sortable 64-bit key each.
    const size_t n_codewords = count.size();
    std::vector<uint64_t> order(n_codewords);
    for (size_t node = 0; node < n_codewords; ++node)
        order[node] = (uint64_t(std::numeric_limits<uint32_t>::max() - uint32_t(count[node])) << 32) | node;
    std::sort(order.begin(), order.end());

    Allocation a;
    a.rows.assign(size_t(V), 1);
    int64_t allocated = V;
    for (size_t i = 0; i < n_codewords && allocated < n_emb; ++i) {
        int64_t& rows = a.rows[size_t(last_token[order[i] & 0xffffffffu])];
        if (rows < k_max) {
            ++rows;
            ++allocated;
        }
    }

    if (allocated < n_emb) {
        // The codewords ran out: one more row per token in id order, pass after pass, until n_emb or k_max.
        const int64_t before = allocated;
        bool added = true;
        while (allocated < n_emb && added) {
            added = false;
            for (int64_t& rows : a.rows) {
                if (allocated >= n_emb) break;
                if (rows < k_max) {
                    ++rows;
                    ++allocated;
                    added = true;
                }
            }
        }
        if (allocated > before)
            a.warnings.push_back("lzw allocation: the " + str(int64_t(n_codewords)) + " codewords (" +
                                 str(vocab_size) + " single tokens, " + str(int64_t(n_codewords) - vocab_size) +
                                 " phrases from the sample) gave only " + str(before - vocab_size) + " of the " +
                                 str(n_emb - vocab_size) + " rows beyond one per token; spread the other " +
                                 str(allocated - before) +
                                 " over tokens in id order (the sample is too small for this budget)");
    }
    warn_if_short("lzw", a, n_emb, k_max);
    return a;
}

Allocation frequency_allocation(const std::vector<TokenSequence>& rows, int64_t vocab_size, int64_t n_emb,
                                int64_t k_max, const AllocationProgress& progress) {
    validate("frequency", rows, vocab_size, n_emb, k_max);
    const size_t V = size_t(vocab_size);

    // The reference's "bigram" count credits every occurrence but a sequence's first: score = 2 x count - firsts.
    std::vector<int64_t> score(V, 0);
    int64_t counted = 0;
    for (const TokenSequence& row : rows) {
        for (size_t j = 0; j < row.size(); ++j) score[size_t(row[j])] += j == 0 ? 1 : 2;
        counted += int64_t(row.size());
        if (progress) progress(counted);
    }

    // Its round robin over the tokens sorted by score gives every token one row per full pass, so all tokens
    // move in step and reach k_max together; only the last, partial pass depends on the order.
    Allocation a;
    const int64_t extra = n_emb - vocab_size;
    const int64_t full_passes = std::min(extra / vocab_size, k_max - 1);
    a.rows.assign(V, 1 + full_passes);
    if (full_passes < k_max - 1) {
        const size_t partial = size_t(extra - full_passes * vocab_size);  // < V here
        // Python's sorted(..., reverse=True) is stable: equal scores keep ascending token ids.
        std::vector<int32_t> order(V);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t x, int32_t y) { return score[size_t(x)] > score[size_t(y)]; });
        for (size_t i = 0; i < partial; ++i) ++a.rows[size_t(order[i])];
    }
    warn_if_short("frequency", a, n_emb, k_max);
    return a;
}

std::vector<TokenSequence> split_at_bos(const std::vector<TokenSequence>& rows, int32_t bos_token) {
    std::vector<TokenSequence> pieces;
    for (const TokenSequence& row : rows) {
        auto begin = row.begin();
        while (begin != row.end()) {
            auto end = std::find(begin + 1, row.end(), bos_token);
            pieces.emplace_back(begin, end);
            begin = end;
        }
    }
    return pieces;
}

std::vector<int64_t> bounds_from_allocation(const std::vector<int64_t>& rows) {
    std::vector<int64_t> bounds(rows.size() + 1, 0);
    std::partial_sum(rows.begin(), rows.end(), bounds.begin() + 1);
    return bounds;
}

double rows_per_occurrence(const std::vector<int64_t>& rows, const std::vector<TokenSequence>& sample) {
    int64_t touched = 0, occurrences = 0;
    for (size_t i = 0; i < sample.size(); ++i) {
        for (size_t j = 0; j < sample[i].size(); ++j) {
            const int32_t t = sample[i][j];
            if (t < 0 || size_t(t) >= rows.size())
                throw std::invalid_argument("rows_per_occurrence: token id " + str(t) + " at sequence " +
                                            str(int64_t(i)) + ", position " + str(int64_t(j)) +
                                            " is outside the vocabulary [0, " + str(int64_t(rows.size())) + ")");
            touched += rows[size_t(t)];
        }
        occurrences += int64_t(sample[i].size());
    }
    return occurrences == 0 ? 0.0 : double(touched) / double(occurrences);
}

}  // namespace l3lab::l3
