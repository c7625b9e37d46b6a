// Sums a vector of integers.
#include <numeric>
#include <vector>

#include "util.hpp"

int sum(const std::vector<int>& xs) { return std::accumulate(xs.begin(), xs.end(), 0); }
