#pragma once
#include "sim.h"  // CPU stand-in, see sim.h
