// aieflow host model of the AIE API's ADF stream access (UG1529 "Stream and cascade access":
// readincr_v / writeincr on cascade ports, declared by aie_api/aie_adf.hpp). Written for aieflow; no AMD code.
#pragma once
#include "aie.hpp"

#include <cstdlib>

// readincr_v<N>(port) (UG1529): read one accumulator of N lanes from the input cascade, and advance.
// On the host: pop the front word of the link's queue; reading an empty link aborts.
template <unsigned N, typename Tag> aie::accum<Tag, N> readincr_v(input_cascade<Tag>* c)
{
    static_assert(N * Tag::bits == 512, "a cascade word is 512 bits (AM020)");
    if (c->words->empty()) std::abort();
    aie::accum<Tag, N> a;
    const auto& word = c->words->front();
    for (unsigned i = 0; i < N; ++i) a.lane[i] = word.at(i);
    c->words->pop_front();
    return a;
}
// writeincr(port, acc) (UG1529): write one accumulator to the output cascade. On the host: push it onto the
// link's queue as its lanes.
template <typename Tag, unsigned N> void writeincr(output_cascade<Tag>* c, const aie::accum<Tag, N>& a)
{
    static_assert(N * Tag::bits == 512, "a cascade word is 512 bits (AM020)");
    c->words->emplace_back(a.lane.begin(), a.lane.end());
}
