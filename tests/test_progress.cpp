// The small shared components of issue 18 (docs/progress.md, docs/stopping.md): text formatting on fmt,
// the progress report (bar or plain lines), and stop requests with the second-signal rule.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runner/util/format.h"
#include "runner/util/progress.h"
#include "runner/util/stop.h"

using namespace l3lab;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// Plain lines every 50 ms, collected (the environment is read when a Progress is made).
class ProgressLines : public ::testing::Test {
protected:
    void SetUp() override {
        setenv("L3LAB_PROGRESS", "lines", 1);
        setenv("L3LAB_PROGRESS_INTERVAL", "0.05", 1);
    }
    void TearDown() override {
        unsetenv("L3LAB_PROGRESS");
        unsetenv("L3LAB_PROGRESS_INTERVAL");
    }
    util::ProgressOptions collect() {
        util::ProgressOptions o;
        o.plain_line = [this](const std::string& line) {
            std::lock_guard<std::mutex> lock(mutex);
            lines.push_back(line);
        };
        return o;
    }
    std::mutex mutex;
    std::vector<std::string> lines;
};

}  // namespace

TEST(Format, NumbersAsPeopleReadThem) {
    EXPECT_EQ(util::group_digits(0), "0");
    EXPECT_EQ(util::group_digits(999), "999");
    EXPECT_EQ(util::group_digits(1000), "1,000");
    EXPECT_EQ(util::group_digits(20971520), "20,971,520");
    EXPECT_EQ(util::group_digits(-1234567), "-1,234,567");
    EXPECT_EQ(util::group_digits(INT64_MIN), "-9,223,372,036,854,775,808");
    EXPECT_EQ(util::fixed(3.14159, 2), "3.14");
    EXPECT_EQ(util::fixed(2.5, 0), "2");  // ties to even, as printf
    EXPECT_EQ(util::fixed(-0.125, 6), "-0.125000");
    EXPECT_EQ(util::zero_padded(42, 5), "00042");
    EXPECT_EQ(util::zero_padded(1234567, 5), "1234567");
    EXPECT_EQ(util::human_duration(42.4), "42 s");
    EXPECT_EQ(util::human_duration(185), "3 min 05 s");
    EXPECT_EQ(util::human_duration(7620), "2 h 07 min");
    EXPECT_EQ(util::human_duration(-1), "?");
    EXPECT_EQ(util::aligned_table({{"a", "12", "x"}, {"bbb", "3", "yy"}}, 2), "  a  12  x\nbbb   3  yy\n");
}

TEST_F(ProgressLines, LongWorkPrintsLinesWithRateAndTimeLeftThenAClosingLine) {
    {
        util::Progress p("evaluation", 40, "batches", collect());
        for (int i = 0; i < 40; ++i) {
            std::this_thread::sleep_for(5ms);
            p.advance();
        }
    }
    ASSERT_GE(lines.size(), 2u);
    EXPECT_TRUE(contains(lines.front(), "evaluation: ")) << lines.front();
    EXPECT_TRUE(contains(lines.front(), "/40 batches, ")) << lines.front();
    EXPECT_TRUE(contains(lines.front(), " batches/s, ")) << lines.front();
    EXPECT_TRUE(contains(lines.front(), " left")) << lines.front();
    EXPECT_TRUE(contains(lines.back(), "100% 40/40 batches")) << lines.back();
    EXPECT_FALSE(contains(lines.back(), " left")) << lines.back();
}

TEST_F(ProgressLines, QuickWorkPrintsNothing) {
    {
        util::Progress p("evaluation", 3, "batches", collect());
        p.advance(3);
    }
    EXPECT_TRUE(lines.empty()) << lines.front();
}

TEST_F(ProgressLines, OffAndDisabledPrintNothing) {
    {
        util::ProgressOptions o = collect();
        o.enabled = false;  // ranks other than 0
        util::Progress p("evaluation", 10, "batches", o);
        for (int i = 0; i < 10; ++i) {
            std::this_thread::sleep_for(10ms);
            p.advance();
        }
    }
    setenv("L3LAB_PROGRESS", "off", 1);
    {
        util::Progress p("evaluation", 10, "batches", collect());
        for (int i = 0; i < 10; ++i) {
            std::this_thread::sleep_for(10ms);
            p.advance();
        }
    }
    EXPECT_TRUE(lines.empty());
}

TEST_F(ProgressLines, ScaledAndUnknownTotalsAndATickerForWorkThatCannotCount) {
    {
        util::ProgressOptions o = collect();
        o.unit_scale = 1e-6;
        util::Progress p("tokenizing", 0, "MB", o);  // unknown total: no percentage, no time left
        p.set(2'500'000);
        std::this_thread::sleep_for(80ms);
        p.set(5'000'000);
    }
    ASSERT_FALSE(lines.empty());
    EXPECT_TRUE(contains(lines.back(), "tokenizing: 5.0 MB, ")) << lines.back();
    EXPECT_FALSE(contains(lines.back(), "%")) << lines.back();
    lines.clear();
    {
        util::ProgressOptions o = collect();
        o.ticker = true;  // nothing advances it: the clock does
        util::Progress p("training the vocabulary", 0, "", o);
        std::this_thread::sleep_for(300ms);
    }
    ASSERT_GE(lines.size(), 2u);
    EXPECT_EQ(lines.front(), "training the vocabulary: 0 s");
}

TEST_F(ProgressLines, PrintAboveIsSerialisedWithTheReports) {
    std::vector<std::string> order;
    {
        util::ProgressOptions o;
        o.ticker = true;
        o.plain_line = [&](const std::string& line) { order.push_back("report: " + line); };
        util::Progress p("sweep tiny", 2, "cells", o);
        for (int i = 0; i < 2; ++i) {
            std::this_thread::sleep_for(60ms);
            p.print_above([&] { order.push_back("cell " + std::to_string(i) + " done"); });
            p.set(i + 1);
        }
    }
    ASSERT_GE(order.size(), 3u);
    EXPECT_NE(std::find(order.begin(), order.end(), "cell 1 done"), order.end());
    EXPECT_TRUE(contains(order.back(), "100% 2/2 cells")) << order.back();
}

TEST(Stop, ASignalSetsTheFlagThatWorkPollsAndRestoresTheHandlersAfterwards) {
    {
        util::StopSignals signals;
        EXPECT_FALSE(util::stop_requested());
        EXPECT_NO_THROW(util::throw_if_stop_requested("the evaluation"));
        ::raise(SIGUSR1);
        EXPECT_TRUE(util::stop_requested());
        EXPECT_EQ(util::stop_signal(), SIGUSR1);
        ::raise(SIGUSR1);  // SLURM's warning twice: still stopping, not ended
        try {
            util::throw_if_stop_requested("the evaluation");
            ADD_FAILURE() << "no Interrupted";
        } catch (const util::Interrupted& e) {
            EXPECT_STREQ(e.what(), "SIGUSR1 during the evaluation");
        }
    }
    struct sigaction now {};
    sigaction(SIGTERM, nullptr, &now);
    EXPECT_EQ(now.sa_handler, SIG_DFL);
    util::StopSignals again;  // a new run starts without the old request
    EXPECT_FALSE(util::stop_requested());
    EXPECT_EQ(util::stop_reason(), "a stop signal on another rank");
}

TEST(StopDeathTest, ASecondSigtermOrSigintEndsTheProcessAtOnce) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    for (int second : {SIGTERM, SIGINT}) {
        EXPECT_EXIT(
            {
                util::StopSignals signals;
                ::raise(SIGTERM);
                ::raise(second);
                std::_Exit(0);  // not reached
            },
            ::testing::ExitedWithCode(128 + second), "a second stop signal: stopping now");
    }
}

TEST(StopDeathTest, ASecondSignalWaitsForTheAtomicWriteInProgress) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            util::StopSignals signals;
            ::raise(SIGINT);
            {
                util::CriticalSection writing;
                ::raise(SIGTERM);
                const char done[] = "the write finished\n";
                ssize_t ignored = ::write(STDERR_FILENO, done, sizeof done - 1);
                (void)ignored;
            }
            std::_Exit(0);  // not reached: the section's end ends the process
        },
        ::testing::ExitedWithCode(128 + SIGTERM), "the write finished.*a second stop signal");
}
