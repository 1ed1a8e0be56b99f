# Two commands for a newcomer: `make run` and `make test`. Both install what is missing first
# (tools/bootstrap.sh: Debian packages + torch in .venv/), then configure and build into build/.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all bootstrap configure build run test study clean

all: build

bootstrap:
	@tools/bootstrap.sh

$(BUILD)/CMakeCache.txt: | bootstrap
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

configure: bootstrap $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

run: build
	tools/quickstart.sh

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# The CPU scaling-law study (docs/scaling.md): about half an hour on 2 cores; Ctrl-C and rerun to resume.
study: build
	tools/scaling/study.sh

clean:
	rm -rf $(BUILD)
