// Loading and saving ONNX models: a round trip keeps opset and metadata,
// bad files give an Error of the right kind (never a crash), external data
// may not leave the model's directory, a failed save leaves nothing, and a
// save writes through links and keeps the permissions of the file it
// replaces (model::OutputFile, also tested here).

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "model/graph_builder.hpp"
#include "model/output_file.hpp"

namespace bnorm::test {
namespace {

namespace fs = std::filesystem;
using TP = onnx::TensorProto;

// A file's permission bits in octal, as ls and chmod spell them ("600").
std::string mode_of(const fs::path& p) {
  char text[8];
  std::snprintf(text, sizeof text, "%o", static_cast<unsigned>(fs::status(p).permissions()) & 0777u);
  return text;
}

// A fresh directory per test, removed afterwards.
class ModelFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("bnorm_model_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "model");
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path path(const std::string& name) const { return dir_ / "model" / name; }

  static void write(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out << bytes;
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_ / "model")) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  // Conv -> BN with metadata, valid for onnx::checker.
  static GraphBuilder conv_bn() {
    GraphBuilder g;
    g.input("x", TP::FLOAT, {1, 2, 5, 5});
    g.initializer("w", {3, 2, 3, 3}, GraphBuilder::random(54, 1));
    g.node("Conv", {"x", "w"}, {"c"}, "conv");
    g.batch_norm("bn", "c", "y", 3, 2);
    g.output("y", TP::FLOAT, {1, 3, 3, 3});
    auto* meta = g.proto().add_metadata_props();
    meta->set_key("author");
    meta->set_value("bnorm tests");
    g.proto().set_doc_string("round trip");
    return g;
  }

  // Loading `bytes` as a file must throw Error of `kind` whose message contains `needle`.
  void expect_load_error(const std::string& bytes, ErrorKind kind, const std::string& needle) {
    write(path("bad.onnx"), bytes);
    try {
      model::OnnxModel::load(path("bad.onnx"));
      FAIL() << "loaded a bad model; expected: " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }

  // Opening an OutputFile at `p` must throw Error of `kind` naming every word.
  static void expect_output_refused(const fs::path& p, ErrorKind kind,
                                    const std::vector<std::string>& words) {
    try {
      model::OutputFile f(p);
      ADD_FAILURE() << "opened " << p;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      for (const auto& w : words)
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << "'" << w << "' not in: " << e.what();
    }
  }

  // A Conv -> BN model whose weight "w" is stored as external data at `location`.
  std::string with_external_weight(const std::string& location, std::int64_t offset = 0,
                                   std::int64_t length = -1) {
    auto g = conv_bn();
    auto& w = *g.proto().mutable_graph()->mutable_initializer(0);
    w.clear_raw_data();
    w.clear_float_data();
    w.set_data_location(TP::EXTERNAL);
    auto add = [&](const std::string& k, const std::string& v) {
      auto* e = w.add_external_data();
      e->set_key(k);
      e->set_value(v);
    };
    add("location", location);
    if (offset) add("offset", std::to_string(offset));
    if (length >= 0) add("length", std::to_string(length));
    return g.proto().SerializeAsString();
  }

  fs::path dir_;
};

TEST_F(ModelFiles, RoundTripKeepsOpsetMetadataAndValues) {
  auto g = conv_bn();
  g.model().save(path("m.onnx"));
  EXPECT_EQ(listing(), std::vector<std::string>{"m.onnx"}) << "a temporary file was left behind";
  const auto m = model::OnnxModel::load(path("m.onnx"));
  EXPECT_EQ(m.opset(), 13);
  ASSERT_EQ(m.proto().metadata_props_size(), 1);
  EXPECT_EQ(m.proto().metadata_props(0).key(), "author");
  EXPECT_EQ(m.proto().metadata_props(0).value(), "bnorm tests");
  EXPECT_EQ(m.proto().doc_string(), "round trip");
  EXPECT_EQ(m.proto().producer_name(), "bnorm-tests");
  EXPECT_EQ(model::to_doubles(*m.constant("w"), "w"), model::to_doubles(*g.model().constant("w"), "w"));
  // from_bytes reads the same model.
  const auto b = model::OnnxModel::from_bytes(read(path("m.onnx")), dir_ / "model");
  EXPECT_EQ(b.proto().SerializeAsString(), m.proto().SerializeAsString());
}

TEST_F(ModelFiles, SaveReplacesAnExistingFileWhole) {
  write(path("m.onnx"), std::string(1 << 20, 'x'));
  conv_bn().model().save(path("m.onnx"));
  EXPECT_NO_THROW(model::OnnxModel::load(path("m.onnx")));
  EXPECT_EQ(listing(), std::vector<std::string>{"m.onnx"});
}

TEST_F(ModelFiles, SaveRefusesAModelTheCheckerRejectsAndLeavesNothing) {
  auto g = conv_bn();
  g.node("Relu", {"undefined_tensor"}, {"r"}, "dangling");  // input never produced
  try {
    g.model().save(path("m.onnx"));
    FAIL() << "saved a model that fails onnx::checker";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_model);
    EXPECT_NE(std::string(e.what()).find("onnx::checker"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(listing().empty());
}

TEST_F(ModelFiles, SaveIntoAMissingDirectoryIsAnIoError) {
  try {
    conv_bn().model().save(dir_ / "no_such_dir" / "m.onnx");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "no_such_dir"));
}

// `bnorm fold model.onnx --in-place` where model.onnx -> current.onnx ->
// versions/v3.onnx: the links stay, v3.onnx is replaced in its own directory.
TEST_F(ModelFiles, SaveWritesThroughSymlinksAndKeepsThem) {
  fs::create_directory(path("versions"));
  write(path("versions/v3.onnx"), "old bytes");
  fs::create_symlink("versions/v3.onnx", path("current.onnx"));
  fs::create_symlink(path("current.onnx"), path("m.onnx"));  // absolute
  conv_bn().model().save(path("m.onnx"));
  ASSERT_TRUE(fs::is_symlink(path("m.onnx"))) << "the link was replaced by a file";
  ASSERT_TRUE(fs::is_symlink(path("current.onnx")));
  EXPECT_EQ(fs::read_symlink(path("m.onnx")), path("current.onnx"));
  EXPECT_EQ(fs::read_symlink(path("current.onnx")), "versions/v3.onnx");
  EXPECT_NO_THROW(model::OnnxModel::load(path("versions/v3.onnx")));
  EXPECT_EQ(listing(), (std::vector<std::string>{"current.onnx", "m.onnx", "versions"}));
  EXPECT_EQ(std::distance(fs::directory_iterator(path("versions")), fs::directory_iterator()), 1);
}

// A dangling link is written through when the file it names can be created
// (the link stays and now resolves); otherwise it is an io error naming the
// link and its target, and the link stays as it was.
TEST_F(ModelFiles, SaveThroughADanglingLink) {
  fs::create_directory(path("versions"));
  fs::create_symlink("versions/v4.onnx", path("m.onnx"));
  conv_bn().model().save(path("m.onnx"));
  ASSERT_TRUE(fs::is_symlink(path("m.onnx"))) << "the link was replaced by a file";
  EXPECT_NO_THROW(model::OnnxModel::load(path("versions/v4.onnx")));

  fs::create_symlink("no_such_dir/m.onnx", path("lost.onnx"));
  try {
    conv_bn().model().save(path("lost.onnx"));
    FAIL() << "wrote through a link into a missing directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io) << e.what();
    for (const char* word : {"lost.onnx", "no_such_dir", "No such file or directory"})
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
  }
  ASSERT_TRUE(fs::is_symlink(path("lost.onnx")));
  EXPECT_EQ(fs::read_symlink(path("lost.onnx")), "no_such_dir/m.onnx");
  EXPECT_EQ(listing(), (std::vector<std::string>{"lost.onnx", "m.onnx", "versions"}));
}

// Overwriting (e.g. --in-place) keeps the existing file's permission bits;
// a new file gets 0666 & ~umask.
TEST_F(ModelFiles, SaveKeepsPermissionBits) {
  struct RestoreUmask {
    mode_t saved = ::umask(022);
    ~RestoreUmask() { ::umask(saved); }
  } restore;
  for (const char* mode : {"600", "640", "444"}) {
    conv_bn().model().save(path("m.onnx"));
    fs::permissions(path("m.onnx"), fs::perms(std::stoi(mode, nullptr, 8)));
    conv_bn().model().save(path("m.onnx"));
    EXPECT_EQ(mode_of(path("m.onnx")), mode);
    fs::remove(path("m.onnx"));
  }
  ::umask(027);
  conv_bn().model().save(path("new.onnx"));
  EXPECT_EQ(mode_of(path("new.onnx")), "640");
  EXPECT_EQ(listing(), std::vector<std::string>{"new.onnx"});
}

// model::OutputFile, which save() and NpyWriter write through: what their
// own tests do not reach.

TEST_F(ModelFiles, OutputFileCommitReplacesAndAbandonLeavesTheDestination) {
  write(path("out"), "old");
  {
    model::OutputFile f(path("out"));
    f.write("new", 3);
    EXPECT_EQ(listing().size(), 2u);  // out and the temporary
  }
  EXPECT_EQ(listing(), std::vector<std::string>{"out"});
  EXPECT_EQ(read(path("out")), "old");
  model::OutputFile f(path("out"));
  f.write("new", 3);
  f.commit();
  EXPECT_TRUE(f.committed());
  EXPECT_EQ(read(path("out")), "new");
  EXPECT_EQ(listing(), std::vector<std::string>{"out"});
  EXPECT_THROW(f.write("x", 1), Error);
  EXPECT_THROW(f.commit(), Error);
}

// A bare name's directory is the current one: commit syncs "." after the
// rename (an empty parent path would fail to open).
TEST_F(ModelFiles, OutputFileCommitsABareNameInTheCurrentDirectory) {
  const fs::path before = fs::current_path();
  fs::current_path(dir_ / "model");
  model::OutputFile f("bare");
  f.write("x", 1);
  EXPECT_NO_THROW(f.commit());
  fs::current_path(before);
  EXPECT_TRUE(f.committed());
  EXPECT_EQ(read(path("bare")), "x");
  EXPECT_EQ(listing(), std::vector<std::string>{"bare"});
}

TEST_F(ModelFiles, OutputFileMovedOwnsTheTemporary) {
  model::OutputFile a(path("a"));
  model::OutputFile b(std::move(a));
  // The moved-from state is part of the contract.
  EXPECT_FALSE(a.is_open());  // NOLINT(bugprone-use-after-move,clang-analyzer-cplusplus.Move)
  model::OutputFile c(path("c"));
  c = std::move(b);  // drops c's temporary
  EXPECT_EQ(listing().size(), 1u);
  c.write("a", 1);
  c.commit();
  EXPECT_EQ(listing(), std::vector<std::string>{"a"});
}

// The temporary takes the destination's mode before any data is written,
// so a private file's new contents are never readable by others.
TEST_F(ModelFiles, OutputFileTemporaryIsAsPrivateAsTheDestination) {
  write(path("secret"), "old");
  fs::permissions(path("secret"), fs::perms(0600));
  model::OutputFile f(path("secret"));
  EXPECT_EQ(mode_of("/proc/self/fd/" + std::to_string(f.fd())), "600");
}

TEST_F(ModelFiles, OutputFileFollowsLinkChainsAndRefusesLoops) {
  fs::create_directory(path("d"));
  fs::create_symlink("d/target", path("l1"));
  fs::create_symlink("l1", path("l2"));
  model::OutputFile f(path("l2"));
  EXPECT_EQ(f.destination(), fs::canonical(path("d")) / "target");
  EXPECT_NE(f.describe().find("a link to"), std::string::npos) << f.describe();
  f.write("x", 1);
  f.commit();
  EXPECT_EQ(read(path("d/target")), "x");
  EXPECT_TRUE(fs::is_symlink(path("l2")));

  fs::create_symlink("loop_b", path("loop_a"));
  fs::create_symlink("loop_a", path("loop_b"));
  expect_output_refused(path("loop_a"), ErrorKind::io, {"loop_a", "Too many levels of symbolic links"});
  EXPECT_TRUE(fs::is_symlink(path("loop_a")));
  EXPECT_EQ(listing(), (std::vector<std::string>{"d", "l1", "l2", "loop_a", "loop_b"}));
}

// Renaming over a FIFO or device would replace the node itself.
TEST_F(ModelFiles, OutputFileReplacesOnlyRegularFiles) {
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0644), 0);
  expect_output_refused(path("fifo"), ErrorKind::io, {"fifo", "not a regular file"});
  EXPECT_TRUE(fs::is_fifo(path("fifo")));
  fs::create_directory(path("sub"));
  expect_output_refused(path("sub"), ErrorKind::io, {"sub", "is a directory"});
  expect_output_refused(path("sub/"), ErrorKind::invalid_argument, {"names no file"});
  EXPECT_EQ(listing(), (std::vector<std::string>{"fifo", "sub"}));
}

TEST_F(ModelFiles, MissingFileIsAnIoError) {
  try {
    model::OnnxModel::load(path("absent.onnx"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("absent.onnx"), std::string::npos) << e.what();
  }
}

TEST_F(ModelFiles, TruncatedFilesAreRefusedAtEveryLength) {
  const std::string bytes = conv_bn().proto().SerializeAsString();
  // Every prefix must be refused cleanly (or, rarely, parse as a smaller
  // valid message that the validator then rejects); never crash.
  for (std::size_t n = 0; n < bytes.size(); n += 1 + n / 16) {
    write(path("t.onnx"), bytes.substr(0, n));
    EXPECT_THROW(model::OnnxModel::load(path("t.onnx")), Error) << "prefix of " << n << " bytes";
  }
  expect_load_error(bytes.substr(0, bytes.size() / 2), ErrorKind::invalid_model, "not a valid ONNX model");
}

TEST_F(ModelFiles, OtherFormatsAreRefused) {
  expect_load_error("", ErrorKind::invalid_model, "no graph");
  expect_load_error("this is a text file, not a model\n", ErrorKind::invalid_model, "not a valid ONNX model");
  expect_load_error(std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16), ErrorKind::invalid_model,
                    "not a valid ONNX model");
}

TEST_F(ModelFiles, StructurallyBrokenModelsAreRefused) {
  {
    auto g = conv_bn();
    g.proto().clear_opset_import();
    expect_load_error(g.proto().SerializeAsString(), ErrorKind::invalid_model, "imports no opset");
  }
  {
    auto g = conv_bn();
    g.proto().mutable_graph()->mutable_initializer(0)->set_dims(0, -3);
    expect_load_error(g.proto().SerializeAsString(), ErrorKind::invalid_model, "negative dimension");
  }
  {
    auto g = conv_bn();
    g.proto().mutable_graph()->mutable_node(0)->clear_op_type();
    expect_load_error(g.proto().SerializeAsString(), ErrorKind::invalid_model, "no op_type");
  }
  {  // found by the fuzzer: a BN without outputs
    auto g = conv_bn();
    g.proto().mutable_graph()->mutable_node(1)->clear_output();
    expect_load_error(g.proto().SerializeAsString(), ErrorKind::invalid_model, "schema");
  }
  {  // found by the fuzzer: ONNX's shape inference divides by strides
    auto g = conv_bn();
    GraphBuilder::attr(*g.proto().mutable_graph()->mutable_node(0), "strides", std::vector<std::int64_t>{0, 1});
    expect_load_error(g.proto().SerializeAsString(), ErrorKind::invalid_model, "strides <= 0");
  }
  {  // an attribute of the wrong type
    auto g = conv_bn();
    GraphBuilder::attr(*g.proto().mutable_graph()->mutable_node(1), "epsilon", std::int64_t{1});
    expect_load_error(g.proto().SerializeAsString(), ErrorKind::invalid_model, "epsilon");
  }
  {  // two initializers of one name (onnx::checker refuses; run took the last)
    auto g = conv_bn();
    *g.proto().mutable_graph()->add_initializer() = g.proto().graph().initializer(0);
    expect_load_error(g.proto().SerializeAsString(), ErrorKind::invalid_model,
                      "two initializers are named 'w'");
  }
}

TEST_F(ModelFiles, ExternalDataInsideTheDirectoryIsLoaded) {
  const auto values = model::to_doubles(*conv_bn().model().constant("w"), "w");
  std::string raw(16, '\0');  // an offset, to check it is honoured
  for (double v : values) {
    const float f = static_cast<float>(v);
    raw.append(reinterpret_cast<const char*>(&f), sizeof f);
  }
  fs::create_directories(path("weights"));
  write(path("weights") / "w.bin", raw);
  write(path("ext.onnx"), with_external_weight("weights/w.bin", 16, static_cast<std::int64_t>(raw.size() - 16)));
  const auto m = model::OnnxModel::load(path("ext.onnx"));
  const auto* w = m.constant("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->data_location(), TP::DEFAULT);
  EXPECT_EQ(model::to_doubles(*w, "w"), values);
  // Saved inline: the copy no longer needs the data file.
  m.save(dir_ / "inline.onnx");
  fs::remove_all(path("weights"));
  EXPECT_EQ(model::to_doubles(*model::OnnxModel::load(dir_ / "inline.onnx").constant("w"), "w"), values);
}

TEST_F(ModelFiles, ExternalDataMayNotLeaveTheDirectory) {
  write(dir_ / "outside.bin", std::string(54 * 4, '\0'));
  expect_load_error(with_external_weight("../outside.bin"), ErrorKind::invalid_model, "leaves the model's directory");
  expect_load_error(with_external_weight("weights/../../outside.bin"), ErrorKind::invalid_model,
                    "leaves the model's directory");
  expect_load_error(with_external_weight((dir_ / "outside.bin").string()), ErrorKind::invalid_model,
                    "absolute");
  fs::create_symlink(dir_ / "outside.bin", path("link.bin"));
  expect_load_error(with_external_weight("link.bin"), ErrorKind::invalid_model, "leaves the model's directory");
  fs::create_directory_symlink(dir_, path("up"));
  expect_load_error(with_external_weight("up/outside.bin"), ErrorKind::invalid_model,
                    "leaves the model's directory");
}

TEST_F(ModelFiles, ExternalDataErrors) {
  expect_load_error(with_external_weight("missing.bin"), ErrorKind::io, "missing.bin");
  write(path("short.bin"), std::string(10, '\0'));
  expect_load_error(with_external_weight("short.bin"), ErrorKind::invalid_model, "short.bin");
  write(path("w.bin"), std::string(54 * 4, '\0'));
  expect_load_error(with_external_weight("w.bin", 8, 54 * 4), ErrorKind::invalid_model, "range");
  expect_load_error(with_external_weight("w.bin", -4), ErrorKind::invalid_model, "offset");
  // Numbers are whole (std::stoll read "4junk" as 4).
  {
    std::string bytes = with_external_weight("w.bin");
    onnx::ModelProto m;
    ASSERT_TRUE(m.ParseFromString(bytes));
    auto* e = m.mutable_graph()->mutable_initializer(0)->add_external_data();
    e->set_key("offset");
    e->set_value("4junk");
    expect_load_error(m.SerializeAsString(), ErrorKind::invalid_model,
                      "offset '4junk' is not a whole number");
  }
  // A FIFO is not opened (that waited forever for a writer).
  ASSERT_EQ(mkfifo(path("pipe.bin").c_str(), 0600), 0);
  expect_load_error(with_external_weight("pipe.bin"), ErrorKind::io, "is not a regular file");
}

// External data of sparse initializers and of TENSORS attributes is loaded
// (and confined) as an initializer's is: both were passed through unchecked,
// pointing anywhere. The files read are the model's inputs too.
TEST_F(ModelFiles, EveryExternalTensorIsLoadedAndListed) {
  write(dir_ / "outside.bin", std::string(8, '\0'));
  auto external = [](onnx::TensorProto& t, const std::string& location) {
    t.clear_raw_data();
    t.set_data_location(TP::EXTERNAL);
    auto* e = t.add_external_data();
    e->set_key("location");
    e->set_value(location);
  };
  auto sparse = [&](const std::string& location) {
    auto g = conv_bn();
    auto* s = g.proto().mutable_graph()->add_sparse_initializer();
    s->add_dims(4);
    auto* v = s->mutable_values();
    v->set_name("s");
    v->set_data_type(TP::FLOAT);
    v->add_dims(2);
    external(*v, location);
    auto* i = s->mutable_indices();
    i->set_data_type(TP::INT64);
    i->add_dims(2);
    i->add_int64_data(0);
    i->add_int64_data(3);
    return g.proto().SerializeAsString();
  };
  auto tensors_attribute = [&](const std::string& location) {
    auto g = conv_bn();
    auto& n = g.node("Foo", {"x"}, {"foo"}, "foo");  // a domain whose schema is not checked
    n.set_domain("test.domain");
    auto* a = n.add_attribute();
    a->set_name("extra");
    a->set_type(onnx::AttributeProto::TENSORS);
    auto* t = a->add_tensors();
    t->set_data_type(TP::FLOAT);
    t->add_dims(2);
    external(*t, location);
    return g.proto().SerializeAsString();
  };
  expect_load_error(sparse("../outside.bin"), ErrorKind::invalid_model, "sparse initializer 's' values");
  expect_load_error(tensors_attribute("../outside.bin"), ErrorKind::invalid_model,
                    "leaves the model's directory");
  write(path("v.bin"), std::string(8, '\0'));
  write(path("s.onnx"), sparse("v.bin"));
  const auto m = model::OnnxModel::load(path("s.onnx"));
  EXPECT_EQ(m.graph().sparse_initializer(0).values().data_location(), TP::DEFAULT);
  EXPECT_EQ(m.graph().sparse_initializer(0).values().raw_data().size(), 8u);
  EXPECT_EQ(m.external_files(), std::vector<std::string>{fs::weakly_canonical(path("v.bin")).string()});
  write(path("t.onnx"), tensors_attribute("v.bin"));
  EXPECT_EQ(model::OnnxModel::load(path("t.onnx")).external_files().size(), 1u);
}

TEST_F(ModelFiles, ParametersFromConstantNodes) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2});
  auto& c = g.node("Constant", {}, {"k"}, "const");
  auto* a = c.add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(TP::FLOAT);
  a->mutable_t()->add_dims(2);
  model::set_values(*a->mutable_t(), {1.5, -2.0});
  g.node("Add", {"x", "k"}, {"y"}, "add");
  g.output("y", TP::FLOAT, {1, 2});
  const auto m = g.model();
  ASSERT_NE(m.constant("k"), nullptr);
  EXPECT_EQ(model::to_doubles(*m.constant("k"), "k"), (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(m.constant("x"), nullptr);
  ASSERT_TRUE(m.producer("y").has_value());
  EXPECT_EQ(m.graph().node(*m.producer("y")).name(), "add");
  EXPECT_TRUE(m.is_graph_output("y"));
  EXPECT_TRUE(m.is_graph_input("x"));
  EXPECT_EQ(m.rank("y"), 2);
}

TEST(OnnxModelQueries, ConstantsThroughIdentityNodes) {
  // PyTorch's exporter shares equal initializers behind Identity nodes.
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2});
  g.initializer("shared", {2}, {0.0, 0.0});
  g.node("Identity", {"shared"}, {"a"});
  g.node("Identity", {"a"}, {"b"});
  g.node("Add", {"x", "b"}, {"y"});
  g.node("Sub", {"x", "shared"}, {"z"});
  g.output("y", TP::FLOAT, {1, 2});
  g.output("z", TP::FLOAT, {1, 2});
  auto m = g.model();
  ASSERT_NE(m.constant("b"), nullptr);
  EXPECT_EQ(m.constant("b"), m.constant("shared"));
  EXPECT_EQ(m.constant("x"), nullptr);
}

TEST(TensorTypes, PropagateThroughCnnOps) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {2, 3, 8, 8});
  g.initializer("w", {4, 3, 3, 3}, GraphBuilder::random(108, 1));
  g.initializer("fc", {4, 5}, GraphBuilder::random(20, 2));
  g.int64_initializer("axes", {1});
  g.int64_initializer("shape", {2, 2, -1});
  g.node("Conv", {"x", "w"}, {"c"});
  g.node("Relu", {"c"}, {"r"});
  g.node("GlobalAveragePool", {"r"}, {"p"});
  g.node("Flatten", {"p"}, {"f"});
  g.node("MatMul", {"f", "fc"}, {"m"});
  g.node("Unsqueeze", {"m", "axes"}, {"u"});
  g.node("Reshape", {"u", "shape"}, {"s"});
  auto& cast = g.node("Cast", {"s"}, {"h"});
  GraphBuilder::attr(cast, "to", std::int64_t{TP::FLOAT16});
  g.node("Add", {"h", "r"}, {"a"});
  g.node("Foo", {"a"}, {"unknown"});
  g.output("unknown", TP::FLOAT, {});
  const auto m = g.model();
  EXPECT_EQ(m.rank("c"), 4);
  EXPECT_EQ(m.rank("r"), 4);
  EXPECT_EQ(m.rank("p"), 4);
  EXPECT_EQ(m.rank("f"), 2);
  EXPECT_EQ(m.rank("m"), 2);
  EXPECT_EQ(m.rank("u"), 3);
  EXPECT_EQ(m.rank("s"), 3);
  EXPECT_EQ(m.rank("h"), 3);
  EXPECT_EQ(m.element_type("r"), TP::FLOAT);
  EXPECT_EQ(m.element_type("h"), TP::FLOAT16);
  EXPECT_EQ(m.rank("a"), 4);  // broadcast: the larger rank
  EXPECT_EQ(m.rank("unknown"), 0);  // declared by the graph output
  EXPECT_EQ(m.rank("never_defined"), std::nullopt);
}

}  // namespace
}  // namespace bnorm::test
