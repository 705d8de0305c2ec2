// The harness's registry, checks, fixtures and main() (declared in harness.h).
#include "harness.h"

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}

[[noreturn]] void Fail(const char* file, int line, const std::string& what) {
  std::ostringstream out;
  out << file << ":" << line << ": " << what;
  throw CheckFailure{out.str()};
}

TempName::TempName() {
  static int counter = 0;
  name_ = "ct-" + std::to_string(getpid()) + "-" + std::to_string(++counter);
  Layer::Destroy(name_);
}

LayerOptions Options(const TempName& name) {
  LayerOptions o;
  o.segment.name = name.str();
  o.segment.size = 2u << 20;
  o.segment.max_channels = 128;
  o.segment.max_groups = 32;
  o.segment.max_members = 256;
  o.segment.max_nodes = 2048;
  o.segment.max_message_size = 256u << 10;
  o.capacity = 100;
  return o;
}

std::vector<uint8_t> Payload(uint32_t id, uint32_t length) {
  std::vector<uint8_t> v(length);
  for (uint32_t j = 0; j < length; ++j) v[j] = static_cast<uint8_t>(id * 131u + j * 7u + (j >> 8));
  return v;
}

void SendText(Layer& layer, std::string_view channel, const std::string& text) {
  layer.Send(channel, reinterpret_cast<const uint8_t*>(text.data()),
             static_cast<uint32_t>(text.size()));
}

uint32_t GroupSendText(Layer& layer, std::string_view group, const std::string& text) {
  return layer.GroupSend(group, reinterpret_cast<const uint8_t*>(text.data()),
                         static_cast<uint32_t>(text.size()));
}

std::vector<std::string> ReceiveText(Layer& layer, const std::string& channel, uint32_t wanted) {
  shmch::ReceivedBatch batch;
  layer.Receive({{channel, wanted}}, batch);
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t i = 0; i < batch.request_of.size(); ++i) {
    out.emplace_back(reinterpret_cast<const char*>(batch.bytes.data()) + at, batch.length_of[i]);
    at += batch.length_of[i];
  }
  return out;
}

std::vector<std::string> Texts(const std::string& prefix, int from, int to) {
  std::vector<std::string> v;
  for (int i = from; i < to; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

bool HasChannel(Layer& layer, const std::string& name) {
  for (const auto& c : layer.ListChannels(100000))
    if (c.name == name) return true;
  return false;
}

bool Readable(int fd, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

std::string RunChild(const std::function<void()>& body, bool quiet) {
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    if (quiet) {
      int null_fd = open("/dev/null", O_WRONLY);
      if (null_fd >= 0) dup2(null_fd, 2);
    }
    try {
      body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      _exit(3);
    }
    _exit(4);  // the body neither exited nor died
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    return WTERMSIG(status) == SIGKILL ? "SIGKILL" : "signal " + std::to_string(WTERMSIG(status));
  }
  return "exit " + std::to_string(WEXITSTATUS(status));
}

std::string DieAtFaultPoint(const LayerOptions& options, int point,
                            const std::function<void(Layer&)>& op) {
  return RunChildThatDies([&] {
    Layer child(options);
    shmch::g_fault_point = point;
    op(child);
  });
}

void PokeSegment(const TempName& name, size_t offset, const void* data, size_t size) {
  int fd = open(name.path().c_str(), O_RDWR);
  if (fd < 0) throw std::runtime_error("open " + name.path() + ": " + std::strerror(errno));
  ssize_t n = pwrite(fd, data, size, static_cast<off_t>(offset));
  close(fd);
  if (n != static_cast<ssize_t>(size)) throw std::runtime_error("pwrite " + name.path());
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  int passed = 0, failed = 0;
  for (const TestCase& test : Registry()) {
    if (argc > 1) {
      bool wanted = false;
      for (int i = 1; i < argc; ++i) wanted = wanted || std::strstr(test.name, argv[i]) != nullptr;
      if (!wanted) continue;
    }
    std::string failure;
    try {
      test.fn();
    } catch (const CheckFailure& f) {
      failure = f.message;
    } catch (const Error& e) {
      failure = std::string("unexpected shmch::Error ") + CodeName(e.code()) + ": " + e.what();
    } catch (const std::exception& e) {
      failure = std::string("unexpected exception: ") + e.what();
    } catch (...) {
      failure = "unexpected exception";
    }
    if (test.known_bug) {
      if (failure.empty()) {
        std::printf("FAIL %s: passed although marked as a known bug (%s): remove the marker\n",
                    test.name, test.known_bug);
        ++failed;
      } else {
        std::printf("PASS %s (known bug reproduced: %s; %s)\n", test.name, test.known_bug,
                    failure.c_str());
        ++passed;
      }
    } else if (failure.empty()) {
      std::printf("PASS %s\n", test.name);
      ++passed;
    } else {
      std::printf("FAIL %s: %s\n", test.name, failure.c_str());
      ++failed;
    }
    std::fflush(stdout);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  // Under ctest, which hides the output of passing tests, the summary also goes to a file that
  // CTestCustom.cmake prints after the run (see native/tests/CMakeLists.txt).
  if (const char* summary = std::getenv("SHMCH_TEST_SUMMARY")) {
    if (FILE* f = std::fopen(summary, "w")) {
      std::fprintf(f, "%d passed, %d failed\n", passed, failed);
      std::fclose(f);
    }
  }
  return failed == 0 ? 0 : 1;
}
