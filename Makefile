# vlreward: GNU Makefile. `make` builds build/vlreward, build/libvlreward.a and build/libvlreward.so.
# `make demo` installs missing Debian packages, builds and scores the bundled demo; `make test` runs
# the whole suite (unit, golden, hostile-input tests, then the same under ASan+UBSan).
# Other targets: test-fast (no sanitizer pass), test-asan, fuzz, install, uninstall, clean.
# Variables: BUILD (output folder), SAN=1 (AddressSanitizer + UBSan), CC, MPI=0 (no Open MPI support).

CC      ?= cc
BUILD   ?= build
LIB_PKGS := libjpeg libpng libwebp libcurl libutf8proc
# The CLI adds libcrypto's SHA-256 (pull verifies downloaded weights).
PKGS    := $(LIB_PKGS) libcrypto
OPT     ?= -O2
# -fvisibility=hidden: libvlreward.so exports only what include/vlreward.h marks VLR_API (the CLI and
# the tests link the static archive, where visibility does not apply).
CFLAGS_BASE := -std=c11 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -fPIC -fopenmp -fvisibility=hidden \
               -D_GNU_SOURCE -Iinclude -Isrc $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -fopenmp -lm -lpthread
# The library itself needs only the decoders, libcurl and utf8proc (the HTTP server is the CLI's).
LIB_LDLIBS := $(shell pkg-config --libs $(LIB_PKGS) 2>/dev/null) -fopenmp -lm -lpthread
# Tests check image bytes by SHA-256 against the goldens with libcrypto (in PKGS too, for pull).
TEST_LDLIBS := $(shell pkg-config --libs libcrypto 2>/dev/null)
ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS  += -fsanitize=address,undefined
LIB_LDLIBS += -fsanitize=address,undefined
endif
CFLAGS  ?=
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS)
# Open MPI (`mpirun -n K vlreward score|eval`, docs/cluster.md): in the CLI when pkg-config finds it;
# MPI=0 leaves it out. The library never links it.
MPI     ?= $(shell pkg-config --exists ompi-c 2>/dev/null && echo 1 || echo 0)
ifeq ($(MPI),1)
$(BUILD)/obj/cli/mpi_batch.o: OBJ_CFLAGS = -DVLR_WITH_MPI $(shell pkg-config --cflags ompi-c)
CLI_LDLIBS := $(shell pkg-config --libs ompi-c)
endif

# Per-ISA kernel files get their own -m flags; everything else is baseline x86-64.
ISA_avx2   := -mavx2 -mfma -mf16c
ISA_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c
ISA_avx512_bf16 := $(ISA_avx512) -mavx512bf16
ISA_avx512_vnni := $(ISA_avx512) -mavx512vnni

LIB_SRC  := $(sort $(wildcard src/*.c src/kernels/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(sort $(wildcard cli/*.c))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
# The CLI's own code (benchmark datasets, FLOP counts, the random-weight model, the server...) as an
# archive the tests link too: none of it is in libvlreward, none of it is installed.
CLI_LIB  := $(BUILD)/libvlreward-cli.a
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Every fuzz target, also built with gcc around tests/fuzz/replay.c: test_fuzz_replay runs the committed
# corpora through them in `make test` (and so under ASan/UBSan too).
REPLAY_BIN := $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/fuzz-replay/replay_%,$(wildcard tests/fuzz/fuzz_*.c))
HDRS     := $(wildcard include/*.h src/*.h src/kernels/*.h cli/*.h tests/*.h)

.PHONY: all deps demo test test-fast test-asan fuzz clean install uninstall python
all: $(BUILD)/vlreward $(BUILD)/libvlreward.a $(BUILD)/libvlreward.so $(TEST_BIN) $(BUILD)/example_score \
     $(BUILD)/bench_gemm $(REPLAY_BIN)

deps:
	@scripts/install-deps

$(BUILD)/obj/src/kernels/x86_avx2.o: ISA_FLAGS = $(ISA_avx2)
$(BUILD)/obj/src/kernels/x86_avx512.o: ISA_FLAGS = $(ISA_avx512)
$(BUILD)/obj/src/kernels/x86_avx512_bf16.o: ISA_FLAGS = $(ISA_avx512_bf16)
$(BUILD)/obj/src/kernels/x86_avx2_int8.o: ISA_FLAGS = $(ISA_avx2)
$(BUILD)/obj/src/kernels/x86_avx512_vnni.o: ISA_FLAGS = $(ISA_avx512_vnni)
# int8.c quantizes weights at load in plain loops: let GCC vectorise them where it needs an epilogue
$(BUILD)/obj/src/kernels/int8.o: ISA_FLAGS = -fvect-cost-model=dynamic

$(BUILD)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ISA_FLAGS) $(OBJ_CFLAGS) -c $< -o $@

$(BUILD)/libvlreward.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library: the real file carries the SONAME libvlreward.so.0 (bumped when the ABI breaks),
# libvlreward.so is the link-time name pointing at it.
VERSION := $(shell sed -n 's/^\#define VLR_VERSION "\(.*\)"/\1/p' include/vlreward.h)
SONAME  := libvlreward.so.0
$(BUILD)/$(SONAME): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LIB_LDLIBS)

$(BUILD)/libvlreward.so: $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(CLI_LIB): $(filter-out %/main.o,$(CLI_OBJ))
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/vlreward: $(CLI_OBJ) $(BUILD)/libvlreward.a
	$(CC) -o $@ $(CLI_OBJ) $(BUILD)/libvlreward.a $(LDLIBS) $(CLI_LDLIBS)

$(BUILD)/example_score: examples/score.c $(BUILD)/libvlreward.a $(HDRS)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libvlreward.a $(LDLIBS)

# Kernel micro-benchmark (bench/README.md; add -DWITH_OPENBLAS -DWITH_DNNL by hand to compare).
$(BUILD)/bench_gemm: bench/gemm.c $(BUILD)/libvlreward.a $(HDRS)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libvlreward.a $(LDLIBS)

# The tests get the CLI's OpenMP default too (cli/omp_defaults.c: libgomp spins briefly, then sleeps),
# and the CLI's code (eval, bench's model and FLOP counts) from its archive.
$(BUILD)/tests/%: tests/%.c $(BUILD)/obj/cli/omp_defaults.o $(CLI_LIB) $(BUILD)/libvlreward.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Icli -o $@ $< $(BUILD)/obj/cli/omp_defaults.o $(CLI_LIB) $(BUILD)/libvlreward.a $(LDLIBS) $(TEST_LDLIBS) $(TEST_WRAP)
# test_alloc_fail makes the library's Nth allocation fail: its calls go through the test's wrappers
$(BUILD)/tests/test_alloc_fail: TEST_WRAP = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,--wrap=posix_memalign

$(BUILD)/fuzz-replay/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(BUILD)/libvlreward.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Icli -o $@ $< $(REPLAY_SRC) tests/fuzz/replay.c $(BUILD)/libvlreward.a $(LDLIBS)
# the server's HTTP framing is the CLI's: its target takes the one file
$(BUILD)/fuzz-replay/replay_http: REPLAY_SRC = cli/http_parse.c
$(BUILD)/fuzz-replay/replay_http: cli/http_parse.c

DEMO_Q := Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\nQuestion: Is Purple the highest value?\nChoices:\n(A) no\n(B) yes
demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/vlreward
	$(BUILD)/vlreward info --model tests/reference/models/tiny-a
	@echo "vlreward score --model tests/reference/models/tiny-a --image tests/reference/images/demo.jpg \\"
	@echo "    --question 'Hint: Please answer the question ... (B) yes' --answer 'The answer is: B'"
	@printf 'reward: '
	@$(BUILD)/vlreward score --model tests/reference/models/tiny-a \
	    --image tests/reference/images/demo.jpg --question "$$(printf '$(DEMO_Q)')" --answer "The answer is: B"

# The Python package (python/, docs/python.md), built in place against $(BUILD)/libvlreward.a;
# tests/test_python.c runs its tests with the same interpreter.
# Debian's interpreter when there is one: scripts/install-deps installs python3-dev, -setuptools, -numpy
# and -pil for it (a python3 earlier on PATH, pyenv's say, sees none of them).
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
python: $(BUILD)/libvlreward.a
	cd python && VLREWARD_BUILD=$(abspath $(BUILD)) $(PYTHON) setup.py -q build_ext --inplace --force

test: deps
	@$(MAKE) --no-print-directory all python
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 OPT=-O1 all
	@scripts/run-tests $(BUILD) build-asan

test-fast: all python
	@scripts/run-tests $(BUILD)

test-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 OPT=-O1 all
	@scripts/run-tests build-asan

clean:
	rm -rf build build-asan build-fuzz python/build python/vlreward/*.so

# `make install PREFIX=/usr/local` (DESTDIR honoured): the CLI, the header, both libraries and a
# pkg-config file, so `pkg-config --cflags --libs vlreward` builds programs against the library.
PREFIX ?= /usr/local
install: $(BUILD)/vlreward $(BUILD)/libvlreward.a $(BUILD)/libvlreward.so
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/vlreward $(DESTDIR)$(PREFIX)/bin/vlreward
	install -m 644 include/vlreward.h $(DESTDIR)$(PREFIX)/include/vlreward.h
	install -m 644 $(BUILD)/libvlreward.a $(DESTDIR)$(PREFIX)/lib/libvlreward.a
	install -m 755 $(BUILD)/$(SONAME) $(DESTDIR)$(PREFIX)/lib/libvlreward.so.$(VERSION)
	ln -sf libvlreward.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libvlreward.so
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: vlreward\nDescription: Skywork-VL-Reward inference engine\nVersion: %s\nRequires.private: %s\nCflags: -I$${includedir}\nLibs: -L$${libdir} -lvlreward\nLibs.private: -fopenmp -lm -lpthread\n' \
	    "$(PREFIX)" "$(VERSION)" "$(LIB_PKGS)" \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/vlreward.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/vlreward $(DESTDIR)$(PREFIX)/include/vlreward.h \
	      $(DESTDIR)$(PREFIX)/lib/libvlreward.a $(DESTDIR)$(PREFIX)/lib/libvlreward.so \
	      $(DESTDIR)$(PREFIX)/lib/$(SONAME) $(DESTDIR)$(PREFIX)/lib/libvlreward.so.$(VERSION) \
	      $(DESTDIR)$(PREFIX)/lib/pkgconfig/vlreward.pc

# libFuzzer targets (clang; tests/fuzz/fuzz_<name>.c says what each one checks): hostile image bytes,
# JSON text, safetensors headers, request lines through the chat template, tokenizer text and ids,
# the server's admission of a POST /score body (value bound, parse, image costs from headers) and
# its HTTP framing (request heads, chunked bodies).
# `make fuzz` builds every target and runs each for FUZZ_SECONDS (default 120) from the repository
# root; corpora grow in build-fuzz/corpus_<name> from the seeds in tests/fuzz/corpus_<name>, and a
# crashing input is written to build-fuzz/ (replay: build-fuzz/fuzz_<name> FILE).
FUZZ_CFLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Iinclude -Isrc
FUZZ_TARGETS := image json safetensors request tokenizer admission http
FUZZ_SECONDS ?= 120
build-fuzz/fuzz_image: tests/fuzz/fuzz_image.c src/image_decode.c src/image_prep.c src/image_source.c src/base64.c src/fetch_policy.c src/common.c src/json_write.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fopenmp $(filter %.c,$^) $(shell pkg-config --cflags --libs libjpeg libpng libwebp libcurl) -lm -o $@
build-fuzz/fuzz_json: tests/fuzz/fuzz_json.c src/json.c src/common.c src/json_write.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(filter %.c,$^) -lm -o $@
build-fuzz/fuzz_safetensors: tests/fuzz/fuzz_safetensors.c src/safetensors.c src/weights.c src/json.c src/common.c src/json_write.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(filter %.c,$^) -lm -o $@
build-fuzz/fuzz_request: tests/fuzz/fuzz_request.c src/request.c src/chat.c src/json.c src/common.c src/json_write.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(filter %.c,$^) -lm -o $@
build-fuzz/fuzz_admission: tests/fuzz/fuzz_admission.c src/admission.c src/request.c src/image_decode.c src/image_prep.c src/image_source.c src/base64.c src/fetch_policy.c src/json.c src/common.c src/json_write.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fopenmp $(filter %.c,$^) $(shell pkg-config --cflags --libs libjpeg libpng libwebp libcurl) -lm -o $@
build-fuzz/fuzz_tokenizer: tests/fuzz/fuzz_tokenizer.c src/tokenizer.c src/pretokenize.c src/json.c src/common.c src/json_write.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(filter %.c,$^) $(shell pkg-config --cflags --libs libutf8proc) -lm -o $@

build-fuzz/fuzz_http: tests/fuzz/fuzz_http.c cli/http_parse.c $(HDRS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -Icli $(filter %.c,$^) -o $@

fuzz: $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p build-fuzz/corpus_$$t; \
	    echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	    build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -artifact_prefix=build-fuzz/ \
	        build-fuzz/corpus_$$t tests/fuzz/corpus_$$t 2> build-fuzz/fuzz_$$t.log || \
	        { tail -n 60 build-fuzz/fuzz_$$t.log; echo "fuzz_$$t: FINDING (log: build-fuzz/fuzz_$$t.log)"; exit 1; }; \
	    grep -h '^Done' build-fuzz/fuzz_$$t.log; \
	done
