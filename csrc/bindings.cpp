// PYBIND11_MODULE only: converts between Python objects and the C++ core and
// releases the GIL around the scans, so several Python threads can encode
// at once and the scanner's own threads run free.
#include <Python.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "id_buffer.h"
#include "tokenizer.h"
#include "utf8.h"

namespace py = pybind11;
using namespace gptfast;

namespace {

// The UTF-8 bytes of a str; CPython caches them in the object, so for an
// ASCII string this is free and the pointer lives as long as `text`.
std::pair<const uint8_t*, size_t> utf8_of(const py::str& text) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (!data) throw py::error_already_set();  // lone surrogates: UnicodeEncodeError
  return {reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(size)};
}

Branch branch_from_tuple(const py::tuple& t) {
  // (kind, literal_text, (negate, categories, [(lo, hi), ...]), min_repeat, max_repeat)
  Branch b;
  b.literal = t[0].cast<std::string>() == "literal";
  b.text = t[1].cast<std::string>();
  if (b.literal && b.text.empty()) throw py::value_error("empty literal alternative");
  const py::tuple cls = t[2].cast<py::tuple>();
  b.cls.negate = cls[0].cast<bool>();
  b.cls.categories = cls[1].cast<uint32_t>();
  b.cls.ranges = cls[2].cast<std::vector<std::pair<uint32_t, uint32_t>>>();
  b.min_repeat = t[3].cast<int>();
  b.max_repeat = t[4].cast<int>();
  return b;
}

// Encode into a block numpy adopts: ids of type Id, as many as there are tokens.
template <class Id>
py::tuple encode_to_numpy(const Scanner& sc, const py::str& text, int threads) {
  auto [s, n] = utf8_of(text);
  const size_t capacity = n * sizeof(Id);  // a token is at least one byte
  Id* ids = static_cast<Id*>(allocate_ids(capacity));
  py::capsule owner(ids, [](void* p) { free_ids(p); });
  EncodeResult r;
  {
    py::gil_scoped_release release;
    r = sc.encode(s, n, threads, ids);
    release_tail(ids, r.count * sizeof(Id), capacity);
  }
  // Where the first unknown token is, in characters, as Python counts them.
  py::object where = py::none();
  if (r.unknown_at >= 0) {
    const size_t at = static_cast<size_t>(r.unknown_at);
    const auto spans = sc.split(s + at, n - at);
    const size_t len = spans.empty() ? 1 : spans[0].second;
    where = py::make_tuple(count_codepoints(s, at), py::str(reinterpret_cast<const char*>(s + at), len));
  }
  py::array_t<Id> array({static_cast<py::ssize_t>(r.count)}, ids, owner);
  return py::make_tuple(array, where);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "gptfast native core: tokenizer scanner (see csrc/)";

  py::class_<Scanner>(m, "Scanner")
      .def(py::init([](const py::list& branches, const std::string& separators) {
             std::vector<Branch> bs;
             for (const auto& t : branches) bs.push_back(branch_from_tuple(t.cast<py::tuple>()));
             if (bs.empty()) throw py::value_error("a tokenizer program needs at least one alternative");
             return new Scanner(std::move(bs), separators);
           }),
           py::arg("branches"), py::arg("separators"))
      .def("set_vocab", &Scanner::set_vocab, py::arg("tokens"), py::arg("unk_id"))
      .def(
          "encode",
          [](const Scanner& sc, const py::str& text, int threads, bool small_ids) {
            return small_ids ? encode_to_numpy<uint16_t>(sc, text, threads)
                             : encode_to_numpy<int32_t>(sc, text, threads);
          },
          py::arg("text"), py::arg("threads") = 1, py::arg("uint16") = false,
          "(ids, None) or (ids so far, (char_position, token)) at the first unknown token; "
          "ids are uint16 when uint16=True (vocabularies up to 65536), else int32.")
      .def(
          "count",
          [](const Scanner& sc, const py::str& text, int threads) {
            auto [s, n] = utf8_of(text);
            TokenTable counts;
            {
              py::gil_scoped_release release;
              counts = sc.count(s, n, threads);
            }
            py::dict out;
            counts.for_each([&](std::string_view key, uint32_t c) {
              out[py::str(key.data(), key.size())] = c;
            });
            return out;
          },
          py::arg("text"), py::arg("threads") = 1)
      .def(
          "split",
          [](const Scanner& sc, const py::str& text) {
            auto [s, n] = utf8_of(text);
            py::list out;
            for (const auto& [a, b] : sc.split(s, n))
              out.append(py::str(reinterpret_cast<const char*>(s + a), b - a));
            return out;
          },
          py::arg("text"));

  m.def(
      "unicode_flags_table",
      []() {
        // One byte per code point (bit 0 \w, bit 1 \d, bit 2 \s): lets the
        // tests compare the generated tables with this Python's `re`.
        std::string table(0x110000, '\0');
        for (uint32_t cp = 0; cp < 0x110000; ++cp) table[cp] = static_cast<char>(unicode_flags(cp));
        return py::bytes(table);
      },
      "The \\w/\\d/\\s flags the scanner uses, for every code point.");
}
