// aieflow host model of ADF: just enough of AMD's Adaptive Data Flow graph API for an aieflow-generated
// graph to parse with a normal C++20 compiler, and for its kernels to run on the host. Written for aieflow;
// no AMD code. The graph-building calls are type-checked against the shapes the AMD documentation gives,
// and, on the host, they record what the graph builds (kernels, ports, connections, shared buffers with
// their tiling, PLIOs and location constraints) so that adf::host_dump_json can write it out; see
// aieflow.host.graph. The recording (namespace adf::host, host_name, host_dump_json) is host-only, not ADF.
// Reference: UG1603 (AI Engine-ML Kernel and Graph Programming Guide) and UG1079 (AI Engine Kernel and
// Graph Programming Guide) for the graph API, buffers and constraints; UG1529 (AIE API) for the types.
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
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

// Graph construction (UG1603 "Graph programming", "Location constraints", "Runtime ratio"), with the
// signatures the generated graph uses. On the host every call is recorded by adf::host::recorder().
struct kernel;
namespace host {
// What a port belongs to: a kernel, a shared buffer, an input or an output PLIO.
enum object_kind { none = 0, kernel_object = 1, buffer_object = 2, plio_in_object = 3, plio_out_object = 4 };
enum port_dir { dir_in = 0, dir_out = 1, dir_param = 2 };
inline const char* object_name(int k)
{
    switch (k) {
    case kernel_object: return "kernel";
    case buffer_object: return "shared_buffer";
    case plio_in_object: return "input_plio";
    case plio_out_object: return "output_plio";
    default: return "none";
    }
}
inline const char* dir_name(int d) { return d == dir_in ? "in" : d == dir_out ? "out" : "param"; }
// A port handle: (object kind, object id, direction, index). A default-built port is unbound (kind none).
struct port_id { int kind = none; int obj = -1; int dir = dir_in; int idx = 0; };
// The class name of a template argument, from the compiler's function signature (no RTTI needed).
template <class C> std::string type_name()
{
    std::string_view f = __PRETTY_FUNCTION__;
    auto at = f.find("C = ");
    if (at == std::string_view::npos) return std::string(f);
    f.remove_prefix(at + 4);
    auto end = f.find_first_of(";]");
    return std::string(f.substr(0, end));
}
struct location_value { std::string type; int col = 0, row = 0, value = 0; };  // tile / bank(id) / address(offset)
struct kernel_record { std::string cls, name, source; double ratio = -1; };
struct buffer_record { std::string type, name; std::vector<unsigned> dims; unsigned inputs = 0, outputs = 0; };
struct plio_record { bool input = true; std::string name, member, file; int bits = 0; };
struct target { int kind = none; int obj = -1; bool is_port = false; port_id port; };
struct constraint_record { target on; std::string kind; std::vector<location_value> where; };
struct traversal_record { int dimension, stride, wrap; };
struct tiling_record {
    std::vector<std::uint32_t> buffer_dimension, tiling_dimension;
    std::vector<std::int32_t> offset;
    std::vector<traversal_record> tile_traversal;
    int packet_port_id = -1;
    std::uint32_t repetition = 1, phase = 0;
    std::vector<std::uint32_t> boundary_dimension;
};
struct access_record { port_id port; bool write = false; tiling_record tiling; };
struct dims_record { port_id port; std::vector<unsigned> dims; };
struct edge_record { port_id from, to; };
struct recorder_state {
    std::vector<kernel_record> kernels;
    std::vector<buffer_record> buffers;
    std::vector<plio_record> plios;
    std::vector<edge_record> edges;
    std::vector<constraint_record> constraints;
    std::vector<access_record> accesses;
    std::vector<dims_record> dims;
};
// The one recorder of this program (host-only).
inline recorder_state& recorder() { static recorder_state r; return r; }
inline port_id make_port(int kind, int obj, int dir, int idx) { return port_id{kind, obj, dir, idx}; }
} // namespace host

struct port { host::port_id id; };
struct location_constraint { host::location_value value; };
inline location_constraint tile(int col, int row) { return {{"tile", col, row, 0}}; }
inline location_constraint bank(int col, int row, int id) { return {{"bank", col, row, id}}; }
inline location_constraint address(int col, int row, int offset) { return {{"address", col, row, offset}}; }
struct location_ref {
    host::target on;
    const char* kind;
    location_ref& operator=(const location_constraint& c)
    {
        host::recorder().constraints.push_back({on, kind, {c.value}});
        return *this;
    }
    location_ref& operator=(std::initializer_list<location_constraint> cs)
    {
        host::constraint_record r{on, kind, {}};
        for (const auto& c : cs) r.where.push_back(c.value);
        host::recorder().constraints.push_back(r);
        return *this;
    }
};
struct kernel {
    static constexpr const char* host_kind_name = "kernel";
    static constexpr int host_object = host::kernel_object;
    int id = -1;
    port in[8], out[8], param[8];
    template <class C, class... Args> static kernel create_object(Args&&...)
    {
        auto& r = host::recorder();
        kernel k;
        k.id = static_cast<int>(r.kernels.size());
        r.kernels.push_back({host::type_name<C>(), "", "", -1});
        for (int i = 0; i < 8; ++i) {
            k.in[i].id = host::make_port(host::kernel_object, k.id, host::dir_in, i);
            k.out[i].id = host::make_port(host::kernel_object, k.id, host::dir_out, i);
            k.param[i].id = host::make_port(host::kernel_object, k.id, host::dir_param, i);
        }
        return k;
    }
};
struct buffer { static constexpr const char* host_kind_name = "buffer"; };
struct stack { static constexpr const char* host_kind_name = "stack"; };
struct parameter { static constexpr const char* host_kind_name = "parameter"; };
struct ratio { static constexpr const char* host_kind_name = "ratio"; };
template <typename Kind> location_ref location(kernel& k)
{
    return {host::target{host::kernel_object, k.id, false, {}}, Kind::host_kind_name};
}
template <typename Kind> location_ref location(port& p)
{
    return {host::target{p.id.kind, p.id.obj, true, p.id}, Kind::host_kind_name};
}
template <typename Kind, typename B> location_ref location(B& b)
{
    return {host::target{B::host_object, b.id, false, {}}, Kind::host_kind_name};
}
struct dims_ref {
    host::port_id port;
    dims_ref& operator=(std::initializer_list<unsigned> d)
    {
        host::recorder().dims.push_back({port, std::vector<unsigned>(d)});
        return *this;
    }
};
inline dims_ref dimensions(port& p) { return {p.id}; }
struct source_ref {
    int id;
    source_ref& operator=(const char* s)
    {
        if (id >= 0) host::recorder().kernels[id].source = s;
        return *this;
    }
};
inline source_ref source(kernel& k) { return {k.id}; }
struct runtime_ref {
    int id;
    runtime_ref& operator=(double v)
    {
        if (id >= 0) host::recorder().kernels[id].ratio = v;
        return *this;
    }
};
template <typename Kind> runtime_ref runtime(kernel& k) { return {k.id}; }
// PLIO (UG1603 "input_plio and output_plio").
enum plio_type { plio_32_bits, plio_64_bits, plio_128_bits };
namespace host {
inline int plio_bits(plio_type t) { return t == plio_32_bits ? 32 : t == plio_64_bits ? 64 : 128; }
inline int add_plio(bool input, const char* name, plio_type t, const char* file)
{
    auto& r = recorder();
    r.plios.push_back({input, name, "", file ? file : "", plio_bits(t)});
    return static_cast<int>(r.plios.size()) - 1;
}
} // namespace host
struct input_plio {
    static constexpr int host_object = host::plio_in_object;
    int id = -1;
    port out[1];
    static input_plio create(const char* name, plio_type t, const char* file)
    {
        input_plio p;
        p.id = host::add_plio(true, name, t, file);
        p.out[0].id = host::make_port(host::plio_in_object, p.id, host::dir_out, 0);
        return p;
    }
};
struct output_plio {
    static constexpr int host_object = host::plio_out_object;
    int id = -1;
    port in[1];
    static output_plio create(const char* name, plio_type t, const char* file)
    {
        output_plio p;
        p.id = host::add_plio(false, name, t, file);
        p.in[0].id = host::make_port(host::plio_out_object, p.id, host::dir_in, 0);
        return p;
    }
};
// Memory-tile buffers (UG1603 "Memory tile: shared_buffer"). The host model has room for 64 ports a side.
template <typename T> struct shared_buffer {
    static constexpr int host_object = host::buffer_object;
    int id = -1;
    port in[64], out[64];
    static shared_buffer create(std::initializer_list<unsigned> dims, unsigned inputs, unsigned outputs)
    {
        auto& r = host::recorder();
        shared_buffer b;
        b.id = static_cast<int>(r.buffers.size());
        std::string type = std::string(std::is_signed_v<T> ? "int" : "uint") + std::to_string(8 * sizeof(T));
        r.buffers.push_back({type, "", std::vector<unsigned>(dims), inputs, outputs});
        for (int i = 0; i < 64; ++i) {
            b.in[i].id = host::make_port(host::buffer_object, b.id, host::dir_in, i);
            b.out[i].id = host::make_port(host::buffer_object, b.id, host::dir_out, i);
        }
        return b;
    }
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
struct access_pattern { tiling_parameters params; };
inline access_pattern tiling(tiling_parameters p) { return {std::move(p)}; }
struct access_ref {
    host::port_id port;
    bool write;
    access_ref& operator=(const access_pattern& a)
    {
        host::tiling_record t;
        const auto& p = a.params;
        t.buffer_dimension = p.buffer_dimension;
        t.tiling_dimension = p.tiling_dimension;
        t.offset = p.offset;
        for (const auto& x : p.tile_traversal) t.tile_traversal.push_back({x.dimension, x.stride, x.wrap});
        t.packet_port_id = p.packet_port_id;
        t.repetition = p.repetition;
        t.phase = p.phase;
        t.boundary_dimension = p.boundary_dimension;
        host::recorder().accesses.push_back({port, write, t});
        return *this;
    }
};
inline access_ref write_access(port& p) { return {p.id, true}; }
inline access_ref read_access(port& p) { return {p.id, false}; }
inline void connect(port& a, port& b) { host::recorder().edges.push_back({a.id, b.id}); }
class graph {
public:
    void init() {}
    void run(int) {}
    void end() {}
};

// ---- host-only additions (not ADF) ----------------------------------------------------------------------
// host_name(object, "member"): give a kernel, shared buffer or PLIO the member name it has in the graph.
template <typename B> void host_name(B& b, const char* name)
{
    auto& r = host::recorder();
    if (b.id < 0) return;
    if constexpr (B::host_object == host::kernel_object) r.kernels[b.id].name = name;
    else if constexpr (B::host_object == host::buffer_object) r.buffers[b.id].name = name;
    else r.plios[b.id].member = name;
}
namespace host {
inline void json_string(std::ostream& o, std::string_view s)
{
    o << '"';
    for (char c : s) {
        if (c == '"' || c == '\\') o << '\\' << c;
        else if (static_cast<unsigned char>(c) < 0x20) o << ' ';
        else o << c;
    }
    o << '"';
}
template <typename V> void json_list(std::ostream& o, const V& v)
{
    o << '[';
    for (std::size_t i = 0; i < v.size(); ++i) o << (i ? "," : "") << v[i];
    o << ']';
}
inline void json_port(std::ostream& o, const port_id& p)
{
    o << "{\"object\":\"" << object_name(p.kind) << "\",\"id\":" << p.obj << ",\"port\":\"" << dir_name(p.dir)
      << "\",\"index\":" << p.idx << '}';
}
} // namespace host
// host_dump_json(out): everything the graph built so far, as one JSON object (host-only, not ADF).
inline void host_dump_json(std::ostream& o)
{
    using namespace host;
    auto& r = recorder();
    o << "{\"kernels\":[";
    for (std::size_t i = 0; i < r.kernels.size(); ++i) {
        const auto& k = r.kernels[i];
        o << (i ? "," : "") << "{\"id\":" << i << ",\"class\":";
        json_string(o, k.cls);
        o << ",\"name\":";
        json_string(o, k.name);
        o << ",\"source\":";
        json_string(o, k.source);
        o << ",\"runtime\":" << k.ratio << '}';
    }
    o << "],\"shared_buffers\":[";
    for (std::size_t i = 0; i < r.buffers.size(); ++i) {
        const auto& b = r.buffers[i];
        o << (i ? "," : "") << "{\"id\":" << i << ",\"type\":\"" << b.type << "\",\"name\":";
        json_string(o, b.name);
        o << ",\"dims\":";
        json_list(o, b.dims);
        o << ",\"inputs\":" << b.inputs << ",\"outputs\":" << b.outputs << '}';
    }
    o << "],\"plios\":[";
    for (std::size_t i = 0; i < r.plios.size(); ++i) {
        const auto& p = r.plios[i];
        o << (i ? "," : "") << "{\"id\":" << i << ",\"direction\":\"" << (p.input ? "in" : "out") << "\",\"name\":";
        json_string(o, p.name);
        o << ",\"member\":";
        json_string(o, p.member);
        o << ",\"bits\":" << p.bits << ",\"file\":";
        json_string(o, p.file);
        o << '}';
    }
    o << "],\"connections\":[";
    for (std::size_t i = 0; i < r.edges.size(); ++i) {
        o << (i ? "," : "") << "{\"from\":";
        json_port(o, r.edges[i].from);
        o << ",\"to\":";
        json_port(o, r.edges[i].to);
        o << '}';
    }
    o << "],\"constraints\":[";
    for (std::size_t i = 0; i < r.constraints.size(); ++i) {
        const auto& c = r.constraints[i];
        o << (i ? "," : "") << "{\"kind\":\"" << c.kind << "\",\"on\":";
        if (c.on.is_port) json_port(o, c.on.port);
        else o << "{\"object\":\"" << object_name(c.on.kind) << "\",\"id\":" << c.on.obj << '}';
        o << ",\"where\":[";
        for (std::size_t j = 0; j < c.where.size(); ++j) {
            const auto& w = c.where[j];
            o << (j ? "," : "") << "{\"type\":\"" << w.type << "\",\"col\":" << w.col << ",\"row\":" << w.row
              << ",\"value\":" << w.value << '}';
        }
        o << "]}";
    }
    o << "],\"dimensions\":[";
    for (std::size_t i = 0; i < r.dims.size(); ++i) {
        o << (i ? "," : "") << "{\"port\":";
        json_port(o, r.dims[i].port);
        o << ",\"dims\":";
        json_list(o, r.dims[i].dims);
        o << '}';
    }
    o << "],\"accesses\":[";
    for (std::size_t i = 0; i < r.accesses.size(); ++i) {
        const auto& a = r.accesses[i];
        const auto& t = a.tiling;
        o << (i ? "," : "") << "{\"port\":";
        json_port(o, a.port);
        o << ",\"write\":" << (a.write ? "true" : "false") << ",\"tiling\":{\"buffer_dimension\":";
        json_list(o, t.buffer_dimension);
        o << ",\"tiling_dimension\":";
        json_list(o, t.tiling_dimension);
        o << ",\"offset\":";
        json_list(o, t.offset);
        o << ",\"tile_traversal\":[";
        for (std::size_t j = 0; j < t.tile_traversal.size(); ++j) {
            const auto& x = t.tile_traversal[j];
            o << (j ? "," : "") << "{\"dimension\":" << x.dimension << ",\"stride\":" << x.stride
              << ",\"wrap\":" << x.wrap << '}';
        }
        o << "],\"packet_port_id\":" << t.packet_port_id << ",\"repetition\":" << t.repetition
          << ",\"phase\":" << t.phase << ",\"boundary_dimension\":";
        json_list(o, t.boundary_dimension);
        o << "}}";
    }
    o << "]}\n";
}
} // namespace adf
