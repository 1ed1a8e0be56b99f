// C entry points of libl3lab_torch.so beyond runtime_info (see runner/torch_module.h).
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "runner/torch/distributed.h"
#include "runner/torch/trainer.h"

extern "C" int l3lab_torch_train(const char* request_json) {
    try {
        nlohmann::json j = nlohmann::json::parse(request_json);
        l3lab::train::TrainRequest request;
        request.run_dir = j.at("run_dir").get<std::string>();
        request.resume = j.value("resume", false);
        request.init_from = j.value("init_from", "");
        const int code = l3lab::train::run_training(request);
        if (code != 0 && l3lab::dist::active()) {
            // A failed data-parallel run exits at once: its process group may still have collectives
            // blocked on a dead peer, which destroying the group would wait out.
            std::cout.flush();
            std::cerr.flush();
            std::fflush(nullptr);
            std::_Exit(code);
        }
        return code;
    } catch (const std::exception& e) {
        std::cerr << "l3lab: error: bad training request: " << e.what() << "\n";
        return 1;
    }
}
