// Umbrella header: everything in bnorm's public API.
#pragma once

#include "bnorm/batch_norm.hpp"
#include "bnorm/batch_renorm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "bnorm/tensor.hpp"
#include "bnorm/version.hpp"
