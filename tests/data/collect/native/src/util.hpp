// Copyright (c) 2024 Fixture Authors. MIT licence.

/* Small inline helpers shared by the sources. */
#pragma once

inline int twice(int x) { return 2 * x; }
