// SPDX-License-Identifier: MIT
// The two-micro-batch schedules: the documented stage order, and results identical
// to the serial schedule bit for bit (the exchange is deterministic and the stages
// are the same), with the progress thread on and off.
#include <epcomm/epcomm.hpp>

#include <random>
#include <string>
#include <vector>

#include "support/mpi_test.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

constexpr int kLayers = 3;
constexpr int kHidden = 48;

// A toy transformer stack for one micro-batch: attention and the shared expert are
// elementwise maps, experts scale by their id, routing is random per layer.
struct ToyMicroBatch {
  int id = 0;
  Shape shape;
  std::vector<float> x, attn;
  std::vector<RankInput> routes;                // per layer (topk_idx, weights)
  std::vector<std::vector<float>> combined, shared_out;  // per layer
  std::vector<std::string>* log = nullptr;

  ToyMicroBatch(int mb, const Shape& s, int tokens, int rank, std::vector<std::string>* order)
      : id(mb), shape(s), log(order) {
    RankInput in = make_rank_input(s, tokens, 99, 0.1, 40 + mb, rank);
    x = in.x;
    attn.resize(x.size());
    for (int l = 0; l < kLayers; ++l) routes.push_back(make_rank_input(s, tokens, 99, 0.1, 60 + 10 * l + mb, rank));
    combined.assign(kLayers, std::vector<float>(x.size()));
    shared_out.assign(kLayers, std::vector<float>(x.size()));
  }

  void note(const char* stage, int layer) {
    log->push_back(std::string(stage) + std::to_string(id) + "." + std::to_string(layer));
  }

  epcomm::MicroBatchStages stages() {
    epcomm::MicroBatchStages s;
    s.attention = [this](int layer) {
      note("A", layer);
      for (std::size_t i = 0; i < attn.size(); ++i) {
        const float in = layer == 0 ? x[i] : combined[layer - 1][i] + shared_out[layer - 1][i];
        attn[i] = 0.5f * in + 0.125f;
      }
      epcomm::DispatchInput d;
      d.x = attn.data();
      d.topk_idx = routes[layer].topk_idx.data();
      d.topk_weights = routes[layer].topk_weights.data();
      d.num_tokens = routes[layer].num_tokens;
      return d;
    };
    s.experts = [this](int layer, const epcomm::DispatchHandle& h) {
      note("M", layer);
      const auto* rows = static_cast<const float*>(h.rows());
      auto* out = static_cast<float*>(h.expert_out_buffer());
      for (int j = 0; j < h.num_local_experts(); ++j) {
        for (int64_t r = h.expert_offset(j); r < h.expert_offset(j) + h.expert_count(j); ++r) {
          for (int c = 0; c < kHidden; ++c) out[r * kHidden + c] = rows[r * kHidden + c] * (1.0f + 0.0625f * j);
        }
      }
    };
    s.shared = [this](int layer) {
      note("S", layer);
      for (std::size_t i = 0; i < attn.size(); ++i) shared_out[layer][i] = 0.25f * attn[i];
    };
    s.combine_output = [this](int layer) { return static_cast<void*>(combined[layer].data()); };
    return s;
  }
};

using Schedule = void (*)(epcomm::Exchange&, const epcomm::MicroBatchStages&, const epcomm::MicroBatchStages&, int);

struct ScheduleResult {
  std::vector<float> out0, out1;
  std::vector<std::string> order;
};

ScheduleResult run(epcomm::Group& g, Schedule schedule) {
  Shape s{g.size(), g.ranks_per_node(), 3 * g.size(), 2, kHidden};
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = s.experts;
  cfg.topk = s.topk;
  cfg.hidden = kHidden;
  cfg.max_tokens_per_rank = 20;
  cfg.dtype = epcomm::DType::kF32;
  cfg.dispatch_format = epcomm::Format::kF32;
  cfg.combine_format = epcomm::Format::kF32;
  epcomm::Exchange ex(g, cfg);
  ScheduleResult r;
  ToyMicroBatch mb0(0, s, 20, g.rank(), &r.order), mb1(1, s, 13, g.rank(), &r.order);
  schedule(ex, mb0.stages(), mb1.stages(), kLayers);
  r.out0 = mb0.combined[kLayers - 1];
  r.out1 = mb1.combined[kLayers - 1];
  return r;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += x + " ";
  return s;
}

TEST_F(MpiTest, OverlappedSchedulesMatchSerialBitForBit) {
  for (auto mode : {epcomm::GroupOptions::Progress::kThread, epcomm::GroupOptions::Progress::kInline}) {
    epcomm::GroupOptions o;
    o.progress = mode;
    epcomm::Group g(MPI_COMM_WORLD, o);
    const ScheduleResult serial = run(g, &epcomm::run_serial_two_batch);
    const ScheduleResult prefill = run(g, &epcomm::run_prefill_two_batch);
    const ScheduleResult decode = run(g, &epcomm::run_decode_two_batch);
    EXPECT_EQ(prefill.out0, serial.out0);
    EXPECT_EQ(prefill.out1, serial.out1);
    EXPECT_EQ(decode.out0, serial.out0);
    EXPECT_EQ(decode.out1, serial.out1);
    // The compute order the schedules promise (docs/overlap.md).
    EXPECT_EQ(joined(serial.order), "A0.0 M0.0 S0.0 A1.0 M1.0 S1.0 A0.1 M0.1 S0.1 A1.1 M1.1 S1.1 "
                                    "A0.2 M0.2 S0.2 A1.2 M1.2 S1.2 ");
    EXPECT_EQ(joined(prefill.order), "A1.0 A0.0 M1.0 M0.0 S1.0 A1.1 S0.0 A0.1 M1.1 M0.1 S1.1 "
                                     "A1.2 S0.1 A0.2 M1.2 M0.2 S1.2 S0.2 ");
    EXPECT_EQ(joined(decode.order), "A0.0 A1.0 S0.0 M0.0 S1.0 M1.0 A0.1 A1.1 S0.1 M0.1 S1.1 M1.1 "
                                    "A0.2 A1.2 S0.2 M0.2 S1.2 M1.2 ");
  }
}

TEST_F(MpiTest, SchedulesNeedTwoSlots) {
  epcomm::Group g(MPI_COMM_WORLD);
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = g.size();
  cfg.topk = 1;
  cfg.hidden = 4;
  cfg.max_tokens_per_rank = 1;
  cfg.max_inflight = 1;
  epcomm::Exchange ex(g, cfg);
  epcomm::MicroBatchStages none;
  try {
    epcomm::run_prefill_two_batch(ex, none, none, 1);
    FAIL() << "ran with one slot";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("max_inflight >= 2, got 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace epcomm_test
