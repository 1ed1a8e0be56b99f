// The boundary between experiment YAML and the model registry: turns the `model:` section into
// modules::GPTOptions, resolving `auto` values with the reference's rules.
#pragma once

#include "modules/shapes/gpt_options.h"
#include "runner/config/experiment.h"

namespace l3lab::config {

// Model built for `experiment`; throws ConfigException (located) when the options do not fit together.
modules::GPTOptions model_options(const Experiment& experiment);

// The experiment's settings at another depth, without L3 layers: the reference-depth model whose
// scaling parameters set D_ref. Like base_train.py's build_model_meta(12), it has n_kv_head = n_head.
modules::GPTOptions reference_model_options(const Experiment& experiment, long long depth);

}  // namespace l3lab::config
