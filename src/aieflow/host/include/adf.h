// aieflow host model of ADF: just enough of AMD's Adaptive Data Flow graph API for an aieflow-generated
// graph to parse with a normal C++20 compiler, and for its kernels to run on the host. Written for aieflow;
// no AMD code. The graph-building parts are declarations only (nothing links or runs them): they exist so
// that the generated graph.h/graph.cpp is type-checked against the shapes the AMD documentation gives.
// Reference: UG1603 (AI Engine-ML Kernel and Graph Programming Guide) and UG1079 (AI Engine Kernel and
// Graph Programming Guide) for the graph API, buffers and constraints; UG1529 (AIE API) for the types.
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <vector>

// The AIE compiler's fixed-width integer names (UG1603 "Scalar data types").
using int8 = std::int8_t;
using uint8 = std::uint8_t;
using int16 = std::int16_t;
using uint16 = std::uint16_t;
using int32 = std::int32_t;
using uint32 = std::uint32_t;
using int64 = std::int64_t;
using uint64 = std::uint64_t;

// Accumulator tags (UG1529 "Accumulator types"): AIE-ML has 32- and 64-bit integer accumulator lanes.
// The host model keeps every lane as int64 whatever the tag; `bits` is the lane width on the device.
struct acc32 { static constexpr int bits = 32; };
struct acc64 { static constexpr int bits = 64; };

// Cascade ports (UG1603 "Cascade streams"; input_cascade/output_cascade are the kernel argument types).
// On the host a cascade link is a queue of 512-bit words, each kept as its accumulator lanes.
using cascade_words = std::deque<std::vector<std::int64_t>>;
template <typename Tag> struct input_cascade { cascade_words* words; };
template <typename Tag> struct output_cascade { cascade_words* words; };

// Registration macros of kernel classes (UG1603 "C++ kernel class support"): no-ops that reference their argument.
#define REGISTER_FUNCTION(f) ((void)&f)
#define REGISTER_PARAMETER(p) ((void)sizeof(p))

namespace adf {
// Buffer ports of a kernel (UG1603 "Buffer port"): data() gives the buffer's first element.
template <typename T> struct input_buffer { T* ptr; T* data() { return ptr; } };
template <typename T> struct output_buffer { T* ptr; T* data() { return ptr; } };

// Graph construction (UG1603 "Graph programming", "Location constraints", "Runtime ratio"): declarations
// only, with the signatures the generated graph uses.
struct port {};
struct location_constraint {};
location_constraint tile(int col, int row);
location_constraint bank(int col, int row, int id);
location_constraint address(int col, int row, int offset);
struct location_ref {
    location_ref& operator=(const location_constraint&);
    location_ref& operator=(std::initializer_list<location_constraint>);
};
struct kernel {
    port in[8], out[8], param[8];
    template <class C, class... Args> static kernel create_object(Args&&...);
};
struct buffer {};
struct stack {};
struct parameter {};
struct ratio {};
template <typename Kind> location_ref location(kernel&);
template <typename Kind> location_ref location(port&);
template <typename Kind, typename B> location_ref location(B&);
struct dims_ref { dims_ref& operator=(std::initializer_list<unsigned>); };
dims_ref dimensions(port&);
struct source_ref { source_ref& operator=(const char*); };
source_ref source(kernel&);
struct runtime_ref { runtime_ref& operator=(double); };
template <typename Kind> runtime_ref runtime(kernel&);
// PLIO (UG1603 "input_plio and output_plio").
enum plio_type { plio_32_bits, plio_64_bits, plio_128_bits };
struct input_plio { port out[1]; static input_plio create(const char*, plio_type, const char*); };
struct output_plio { port in[1]; static output_plio create(const char*, plio_type, const char*); };
// Memory-tile buffers (UG1603 "Memory tile: shared_buffer").
template <typename T> struct shared_buffer {
    port in[16], out[16];
    static shared_buffer create(std::initializer_list<unsigned>, unsigned, unsigned);
};
// The fields of UG1603's tiling_parameters in their order, so the designated initializers are checked.
struct traversing_parameters { int dimension; int stride; int wrap; };
struct tiling_parameters {
    std::vector<std::uint32_t> buffer_dimension;
    std::vector<std::uint32_t> tiling_dimension;
    std::vector<std::int32_t> offset;
    std::vector<traversing_parameters> tile_traversal;
    int packet_port_id = -1;
    std::uint32_t repetition = 1;
    std::uint32_t phase = 0;
    std::vector<std::uint32_t> boundary_dimension;
};
struct access_pattern {};
access_pattern tiling(tiling_parameters);
struct access_ref { access_ref& operator=(const access_pattern&); };
access_ref write_access(port&);
access_ref read_access(port&);
void connect(port&, port&);
class graph {
public:
    void init() {}
    void run(int) {}
    void end() {}
};
} // namespace adf
